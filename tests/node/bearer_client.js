// A Node.js client sending a bearer token with https.request (Node's own TLS: OpenSSL,
// compiled into the official node executable, or the system's libssl under Debian's).
// The server's CA comes from NODE_EXTRA_CA_CERTS: the certificate is verified.
// Prints "SENT <status>" once the response has arrived.
//
// usage: node bearer_client.js URL TOKEN
//        node bearer_client.js - TOKEN   (prints "WAITING", then reads the URL from stdin:
//                                         the process is running before it sends)
"use strict";
const https = require("https");

function send(url, token) {
  const req = https.request(url, { method: "GET", headers: { Authorization: `Bearer ${token}` } }, (res) => {
    res.resume();
    res.on("end", () => console.log(`SENT ${res.statusCode}`));
  });
  req.on("error", (e) => {
    console.error(`request failed: ${e.message}`);
    process.exit(1);
  });
  req.end();
}

const [url, token] = process.argv.slice(2);
if (url === "-") {
  console.log("WAITING");
  let input = "";
  process.stdin.on("data", (chunk) => {
    input += chunk;
    if (input.includes("\n")) {
      process.stdin.pause();
      send(input.trim(), token);
    }
  });
} else {
  send(url, token);
}
