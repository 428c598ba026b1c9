// A site behind rendertron-middleware (the real npm package), pointed at
// PRISM's render-service port (its /render route). Env: PRISM_SERVICE_URL,
// ORIGIN. Prints "listening PORT".
const express = require('express');
const rendertron = require('rendertron-middleware');
const { passToOrigin } = require('./origin-pass');

const app = express();
app.use(rendertron.makeMiddleware({ proxyUrl: process.env.PRISM_SERVICE_URL + '/render', timeout: 30000 }));
app.use(passToOrigin(process.env.ORIGIN));
const srv = app.listen(0, '127.0.0.1', () => console.log('listening ' + srv.address().port));
