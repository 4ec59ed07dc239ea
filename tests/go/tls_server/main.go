// A Go net/http TLS server for Sigil's tests: it answers every request 200 with its
// method and path, whatever the method (net/http passes unknown methods to the handler),
// and keeps the connection open, as Go API servers do.
//
// usage: tls_server CERT KEY   (binds 127.0.0.1 port 0 and prints "READY <port>")
package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"os"
)

func main() {
	cert, err := tls.LoadX509KeyPair(os.Args[1], os.Args[2])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("READY %d\n", ln.Addr().(*net.TCPAddr).Port)
	conf := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"http/1.1"}}
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", r.Method, r.URL.Path)
	})
	if err := http.Serve(tls.NewListener(ln, conf), handler); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
