package main

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync/atomic"

	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/api"
)

type consoleCmd struct{}

// ConsoleLink is GET /v1/console: the web console's sign-in link.
type ConsoleLink struct {
	URL string `json:"url"`
}

func (c *consoleCmd) Run(e *env) error {
	cl, err := e.daemonClient("rewind console")
	if err != nil {
		return err
	}
	defer cl.Close()
	var link ConsoleLink
	if err := cl.Call(e.ctx, "GET", "/v1/console", nil, &link); err != nil {
		return err
	}
	return e.print(link, func() {
		fmt.Println(link.URL)
		fmt.Fprintln(os.Stderr, "open it in a browser to sign in to the console; it holds the API token, so share it as you would the token")
	})
}

// consoleLink is the sign-in link of the console the daemon serves on
// --http, set once that listener is up.
type consoleLink struct{ url atomic.Pointer[string] }

// set records the link of a console on addr (the --http listener, as
// bound), with token; hosts are the --http-host names.
func (l *consoleLink) set(addr net.Addr, tls bool, token string, hosts []string) {
	host, port, _ := net.SplitHostPort(addr.String())
	// A listener on every address: the first --http-host name, else
	// loopback (the server itself, or an ssh tunnel to it); a name the
	// guard does not know would be refused.
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if len(hosts) > 0 {
			host = hosts[0]
		}
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port), Path: "/", RawQuery: "token=" + url.QueryEscape(token)}
	if tls {
		u.Scheme = "https"
	}
	s := u.String()
	l.url.Store(&s)
}

// consoleRoutes serve the link on the local socket only: it holds the
// token, which the socket's callers (root and DATA's owner) may read in
// DATA/api-token anyway; over --http the caller has the token already.
func (d *daemon) consoleRoutes() []api.Route {
	return []api.Route{
		{Method: "GET", Pattern: "/v1/console", Answer: ConsoleLink{},
			Handler: api.OK(func(r *http.Request) (any, error) {
				if _, ok := api.PeerUID(r.Context()); !ok {
					return nil, api.Forbiddenf("the console's sign-in link is served on the local socket only: run rewind console on the server")
				}
				u := d.console.url.Load()
				if u == nil {
					return nil, fmt.Errorf("%w: the daemon serves no web console: start it with --http ADDR (for example --http 127.0.0.1:8080)", catalog.ErrNotFound)
				}
				return ConsoleLink{URL: *u}, nil
			})},
	}
}
