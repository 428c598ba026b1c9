// A site behind prerender-node (the real npm package), pointed at PRISM's
// render-service port: crawlers get the page from PRISM, people the origin.
// Env: PRISM_SERVICE_URL, PRERENDER_TOKEN, ORIGIN. Prints "listening PORT".
const express = require('express');
const prerender = require('prerender-node');
const { passToOrigin } = require('./origin-pass');

prerender.set('prerenderServiceUrl', process.env.PRISM_SERVICE_URL);
if (process.env.PRERENDER_TOKEN) prerender.set('prerenderToken', process.env.PRERENDER_TOKEN);

const app = express();
app.use(prerender);
app.use(passToOrigin(process.env.ORIGIN));
const srv = app.listen(0, '127.0.0.1', () => console.log('listening ' + srv.address().port));
