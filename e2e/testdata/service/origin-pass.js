// passToOrigin: what the site does for everyone the middleware lets
// through (people): the origin's own response.
const http = require('http');

exports.passToOrigin = function (origin) {
  return function (req, res) {
    const u = new URL(req.originalUrl, origin);
    const headers = Object.assign({}, req.headers);
    const preq = http.request(u, { method: req.method, headers }, (pres) => {
      res.writeHead(pres.statusCode, pres.headers);
      pres.pipe(res);
    });
    preq.on('error', () => { res.statusCode = 502; res.end('origin unreachable'); });
    req.pipe(preq);
  };
};
