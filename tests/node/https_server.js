// A Node.js HTTPS server for Sigil's tests: it answers every request 200 with its method
// and path, and keeps the connection open. Node's parser (llhttp) skips empty lines
// before a request line, as RFC 9112 section 2.2 lets a server do.
//
// usage: node https_server.js CERT KEY   (binds 127.0.0.1 port 0 and prints "READY <port>")
"use strict";
const fs = require("fs");
const https = require("https");

const [cert, key] = process.argv.slice(2);
const server = https.createServer({ cert: fs.readFileSync(cert), key: fs.readFileSync(key) }, (req, res) => {
  req.resume();
  req.on("end", () => res.end(`${req.method} ${req.url}\n`));
});
server.listen(0, "127.0.0.1", () => console.log(`READY ${server.address().port}`));
