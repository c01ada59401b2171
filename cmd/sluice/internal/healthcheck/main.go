// Command sluice-healthcheck is the container healthcheck of sluice's images, which have no shell
// and no curl: it GETs a URL (by default the service's own /readyz) and exits 0 on a 2xx answer,
// 1 otherwise, printing the status line and the first line of the body.
//
//	sluice-healthcheck [http://HOST:PORT/PATH]
//
// It speaks plain HTTP/1.0 over net rather than importing net/http, which would add 4 MB to every
// image for one GET.
package main

import (
	"bufio"
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
)

const defaultURL = "http://127.0.0.1:8080/readyz"

func main() {
	target := defaultURL
	if len(os.Args) > 1 {
		target = os.Args[1]
	}
	if err := check(target, 3*time.Second); err != nil {
		fmt.Fprintln(os.Stderr, "sluice-healthcheck:", err)
		os.Exit(1)
	}
}

func check(target string, timeout time.Duration) error {
	u, err := url.Parse(target)
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("%q: want http://HOST:PORT/PATH", target)
	}
	conn, err := net.DialTimeout("tcp", u.Host, timeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(conn, "GET %s HTTP/1.0\r\nHost: %s\r\n\r\n", u.RequestURI(), u.Host); err != nil {
		return err
	}
	r := bufio.NewReader(conn)
	status, err := r.ReadString('\n')
	if err != nil {
		return fmt.Errorf("%s: %w", target, err)
	}
	// "HTTP/1.1 200 OK": the code is the second field.
	if f := strings.Fields(status); len(f) >= 2 && len(f[1]) == 3 && f[1][0] == '2' {
		return nil
	}
	for { // skip the headers to the body's first line
		line, err := r.ReadString('\n')
		if err != nil || strings.TrimSpace(line) == "" {
			break
		}
	}
	body, _ := r.ReadString('\n')
	return fmt.Errorf("%s: %s %s", target, strings.TrimSpace(status), strings.TrimSpace(body))
}
