// A Go crypto/tls client for Sigil's tests: it sends a bearer token, then an S3 PUT
// signed with AWS Signature Version 4 (computed here with the standard library only),
// over one keep-alive TLS connection to the test server.
//
// usage: tls_client BASE_URL BEARER_TOKEN ACCESS_KEY_ID SECRET_KEY
//
// It prints "READY" and waits for a line on stdin before connecting, so a test can let
// the agent hook this freshly built binary first; it prints "SENT" when both requests
// were answered with 200.
package main

import (
	"bufio"
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"time"
)

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// signV4 sets the headers of a SigV4-signed request (single-chunk payload).
func signV4(req *http.Request, body []byte, keyID, secret, region, service string, now time.Time) {
	amzDate := now.UTC().Format("20060102T150405Z")
	day := now.UTC().Format("20060102")
	payload := sha256Hex(body)
	req.Header.Set("X-Amz-Date", amzDate)
	req.Header.Set("X-Amz-Content-Sha256", payload)
	signed := "host;x-amz-content-sha256;x-amz-date"
	canonical := req.Method + "\n" + req.URL.EscapedPath() + "\n" + req.URL.RawQuery + "\n" +
		"host:" + req.URL.Host + "\n" +
		"x-amz-content-sha256:" + payload + "\n" +
		"x-amz-date:" + amzDate + "\n\n" +
		signed + "\n" + payload
	scope := day + "/" + region + "/" + service + "/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + sha256Hex([]byte(canonical))
	k := hmacSHA256([]byte("AWS4"+secret), day)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	k = hmacSHA256(k, "aws4_request")
	sig := hex.EncodeToString(hmacSHA256(k, toSign))
	req.Header.Set("Authorization", fmt.Sprintf("AWS4-HMAC-SHA256 Credential=%s/%s, SignedHeaders=%s, Signature=%s", keyID, scope, signed, sig))
}

func send(c *http.Client, req *http.Request) {
	resp, err := c.Do(req)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		fmt.Fprintln(os.Stderr, "status", resp.Status)
		os.Exit(1)
	}
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: tls_client BASE_URL BEARER_TOKEN ACCESS_KEY_ID SECRET_KEY")
		os.Exit(2)
	}
	base, token, keyID, secret := os.Args[1], os.Args[2], os.Args[3], os.Args[4]
	fmt.Println("READY")
	bufio.NewReader(os.Stdin).ReadString('\n')

	// The test server has a fresh self-signed certificate; HTTP/1.1 as it speaks.
	c := &http.Client{Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
		ForceAttemptHTTP2: false,
	}}
	get, _ := http.NewRequest("GET", base+"/v1/items", nil)
	get.Header.Set("Authorization", "Bearer "+token)
	send(c, get)

	body := []byte("hello from a Go client")
	u, _ := url.Parse(base + "/sigil-go-bucket/object.txt")
	put, _ := http.NewRequest("PUT", u.String(), bytes.NewReader(body))
	signV4(put, body, keyID, secret, "eu-west-1", "s3", time.Now())
	send(c, put)
	fmt.Println("SENT")
}
