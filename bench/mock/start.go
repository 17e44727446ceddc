package mock

import (
	"log/slog"
	"net"
	"testing"
)

// Start runs a Server on a free 127.0.0.1 port for the length of a test and returns its base
// URL ("http://127.0.0.1:port"). The server is closed in t.Cleanup, which also fails the test
// if serving failed. It logs nothing: tests check what it answered and recorded.
func Start(t testing.TB, cfg Config) (baseURL string, srv *Server) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("mock: listen: %v", err)
	}
	srv = New(cfg, slog.New(slog.DiscardHandler))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		if err := srv.Close(); err != nil {
			t.Errorf("mock: close: %v", err)
		}
		if err := <-served; err != nil {
			t.Errorf("mock: serve: %v", err)
		}
	})
	return "http://" + ln.Addr().String(), srv
}
