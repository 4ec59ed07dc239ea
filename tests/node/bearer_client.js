// A Node.js client sending a bearer token with https.request (Node's own TLS: OpenSSL,
// compiled into the official node executable, or the system's libssl under Debian's).
// The server's CA comes from NODE_EXTRA_CA_CERTS: the certificate is verified.
// Prints "SENT <status>" once the response has arrived.
//
// usage: node bearer_client.js URL TOKEN
"use strict";
const https = require("https");

const [url, token] = process.argv.slice(2);
const req = https.request(url, { method: "GET", headers: { Authorization: `Bearer ${token}` } }, (res) => {
  res.resume();
  res.on("end", () => console.log(`SENT ${res.statusCode}`));
});
req.on("error", (e) => {
  console.error(`request failed: ${e.message}`);
  process.exit(1);
});
req.end();
