package integration

import (
	"bytes"
	"fmt"
	"image/png"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
)

// harnessPage is a page shaped like the console's: its script marks
// main#view ready once it has "loaded", and it is taller than the window.
const harnessPage = `<!doctype html>
<html><head><meta name="viewport" content="width=device-width, initial-scale=1">
<style>body { margin: 0 } #tall { height: %dpx; background: linear-gradient(#08f, #f80) }</style></head>
<body><main id="view"><div id="tall"></div><input id="name"></main>
<script>setTimeout(() => { document.querySelector("main#view").dataset.ready = "demo" }, 100)</script>
</body></html>`

// TestHarnessBrowser: Chromium starts, loads a local page, waits for its
// view, types into it, and saves full-page screenshots of the right size,
// on a desktop and on a phone.
func TestHarnessBrowser(t *testing.T) {
	const height = 2000
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		fmt.Fprintf(w, harnessPage, height)
	}))
	defer srv.Close()

	for _, phone := range []bool{false, true} {
		name := map[bool]string{false: "desktop", true: "phone"}[phone]
		t.Run(name, func(t *testing.T) {
			b := newBrowser(t, phone)
			b.open(t, srv.URL+"/", "demo")
			b.fill(t, "input#name", "db01")
			if got := evalJS[string](t, b, `document.querySelector("input#name").value`); got != "db01" {
				t.Errorf("input#name holds %q after typing db01", got)
			}
			if n := b.count(t, "main#view[data-ready=demo]"); n != 1 {
				t.Errorf("%d main#view[data-ready=demo], want 1", n)
			}
			path := b.screenshot(t, "page")
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			img, err := png.Decode(bytes.NewReader(data))
			if err != nil {
				t.Fatalf("%s is not a PNG: %v", path, err)
			}
			// The page's own size, in device pixels: taller than the window.
			want := evalJS[[2]int](t, b, `[document.documentElement.scrollWidth, document.documentElement.scrollHeight]`)
			if want[1] < height {
				t.Fatalf("the page is %d px high, want at least %d", want[1], height)
			}
			viewport := desktopWidth
			if phone {
				viewport = phoneWidth
			}
			if want[0] != viewport {
				t.Errorf("the page is %d px wide, want the viewport's %d", want[0], viewport)
			}
			if got := img.Bounds().Size(); got.X != want[0]*b.Scale || got.Y != want[1]*b.Scale {
				t.Errorf("screenshot is %dx%d, want the whole page, %dx%d", got.X, got.Y, want[0]*b.Scale, want[1]*b.Scale)
			}
		})
	}
}
