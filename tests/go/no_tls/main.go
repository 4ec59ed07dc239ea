// A Go program without crypto/tls: Sigil recognises it as Go but has no TLS write to
// hook, so it must stay reported as uncovered, with that reason.
package main

import "fmt"

func main() { fmt.Println("no TLS here") }
