package nbd_test

import (
	"context"
	"log"
	"log/slog"
	"net"
	"time"

	"github.com/rewind-dev/rewind/nbd"
	"github.com/rewind-dev/rewind/nbd/nbdtest"
)

// A daemon serves its exports on a listener and, on exit, shuts the
// server down, then flushes its backends itself.
func ExampleServer() {
	disk := nbdtest.NewMemory(1<<30, 4096)
	srv := &nbd.Server{
		Resolver: nbdtest.NewResolver(&nbd.Export{
			Name:      "vm1@2024-05-01T10:00:00Z",
			Backend:   disk,
			ReadOnly:  true,
			MultiConn: true, // a point in time: every connection sees the same bytes
			BlockSize: 65536,
		}),
		Logger:           slog.Default(),
		HandshakeTimeout: 10 * time.Second,
		MaxConns:         256,
	}
	l, err := net.Listen("tcp", "127.0.0.1:10809")
	if err != nil {
		log.Fatal(err)
	}
	go func() {
		if err := srv.Serve(l); err != nil && err != nbd.ErrServerClosed {
			log.Print(err)
		}
	}()
	// ... until the daemon is asked to stop:
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Print(err)
	}
	disk.Flush()
}
