package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/readyz" && r.URL.RawQuery == "js=1" {
			_, _ = w.Write([]byte("ready\n"))
			return
		}
		http.Error(w, "nats: not connected", http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	if err := check(srv.URL+"/readyz?js=1", time.Second); err != nil {
		t.Fatalf("ready service: %v", err)
	}
	err := check(srv.URL+"/readyz", time.Second)
	if err == nil || !strings.Contains(err.Error(), "503") || !strings.Contains(err.Error(), "nats: not connected") {
		t.Fatalf("unready service: got %v, want the 503 and the reason", err)
	}
	if err := check("localhost:8080/readyz", time.Second); err == nil {
		t.Fatal("a URL without http:// was accepted")
	}
}
