package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"iter"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// A headless Chromium (Debian's chromium) driven through the DevTools
// protocol with chromedp, for the web console's tests.

// browserTimeout bounds every step a test asks of the browser: a
// navigation, a wait for an element or a view, a click.
const browserTimeout = 30 * time.Second

// The desktop window, and the phone viewport (a common phone's CSS pixels
// at twice the density).
const (
	desktopWidth, desktopHeight = 1280, 900
	phoneWidth, phoneHeight     = 390, 844
	phoneScale                  = 2
)

// browser is one headless Chromium with one tab, closed when the test
// ends. Its methods fail the test given them, which may be a subtest of
// the one that started the browser.
type browser struct {
	ctx   context.Context // the tab's; no deadline: each step gets its own
	Phone bool            // the viewport is a phone's
	Scale int             // device pixels per CSS pixel

	mu      sync.Mutex
	console []string // what the page wrote to its console, and its uncaught exceptions
}

// newBrowser starts Chromium with a profile of its own in t.TempDir(), a
// desktop-sized window or, with phone, a phone's viewport, and returns
// once its first tab answers.
func newBrowser(t testing.TB, phone bool) *browser {
	t.Helper()
	exe := requireTool(t, "chromium", "chromium")
	var output syncBuffer
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(desktopWidth, desktopHeight),
		chromedp.CombinedOutput(&output),
		// No GPU here: Chromium draws with its software rasteriser.
		chromedp.DisableGPU,
	)
	if os.Geteuid() == 0 {
		// Chromium's sandbox refuses to run as root.
		opts = append(opts, chromedp.NoSandbox)
	}
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	// chromedp's own messages join Chromium's output, logged if the test
	// fails: t.Logf could be called after the test ended.
	note := func(format string, args ...any) { fmt.Fprintf(&output, "chromedp: "+format+"\n", args...) }
	ctx, cancelTab := chromedp.NewContext(allocCtx, chromedp.WithLogf(note), chromedp.WithErrorf(note))
	b := &browser{ctx: ctx, Phone: phone, Scale: 1}
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // waits for Chromium to exit and removes nothing of ours
		if t.Failed() {
			if out := chromiumOutput(output.String()); out != "" {
				t.Logf("chromium output:\n%s", out)
			}
			if msgs := b.consoleLines(); len(msgs) > 0 {
				t.Logf("the page's console:\n%s", strings.Join(msgs, "\n"))
			}
		}
	})
	// The first Do starts the browser under ctx, which has no deadline;
	// a deadline here would end the browser with it.
	started := make(chan error, 1)
	go func() { started <- chromedp.Do(ctx) }()
	select {
	case err := <-started:
		if err != nil {
			t.Fatalf("start chromium: %v\n%s", err, chromiumOutput(output.String()))
		}
	case <-time.After(browserTimeout):
		t.Fatalf("chromium did not start within %v\n%s", browserTimeout, chromiumOutput(output.String()))
	}
	go b.collectConsole(chromedp.Console(ctx))
	if phone {
		b.Scale = phoneScale
		b.do(t, "emulate a phone", chromedp.EmulateViewport(phoneWidth, phoneHeight,
			chromedp.EmulateScale(phoneScale), chromedp.EmulateMobile, chromedp.EmulateTouch))
	}
	return b
}

// chromiumOutput drops what Chromium always says on a machine without a
// D-Bus, which would bury the rest.
func chromiumOutput(out string) string {
	var keep []string
	for _, line := range strings.Split(out, "\n") {
		if line != "" && !strings.Contains(line, ":ERROR:dbus/") {
			keep = append(keep, line)
		}
	}
	return strings.Join(keep, "\n")
}

// collectConsole keeps what the page logs, for a failing test's log.
func (b *browser) collectConsole(msgs iter.Seq2[chromedp.ConsoleMessage, error]) {
	for m, err := range msgs {
		if err != nil {
			return
		}
		b.mu.Lock()
		b.console = append(b.console, fmt.Sprintf("%s %s:%d %s", m.Type, m.URL, m.Line+1, m))
		b.mu.Unlock()
	}
}

func (b *browser) consoleLines() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.console...)
}

// step returns a context for one step, bounded by browserTimeout.
func (b *browser) step() (context.Context, context.CancelFunc) {
	return context.WithTimeout(b.ctx, browserTimeout)
}

// do runs actions in order and fails the test, saying what was being
// done, at the first error or after browserTimeout.
func (b *browser) do(t testing.TB, what string, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.failed(t, what, err)
	}
}

// failed ends the test with what went wrong, where the page was, and a
// screenshot of it.
func (b *browser) failed(t testing.TB, what string, err error) {
	t.Helper()
	if errors.Is(err, context.DeadlineExceeded) {
		err = fmt.Errorf("not done within %v", browserTimeout)
	}
	t.Fatalf("browser: %s: %v (%s)", what, err, b.where(t))
}

// where describes the page for an error message, and saves a
// screenshot of it. It never fails the test itself.
func (b *browser) where(t testing.TB) string {
	ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
	defer cancel()
	state, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({
		url: location.href,
		ready: document.querySelector("main#view")?.dataset.ready ?? null,
		signedIn: document.body?.dataset.signedIn ?? null,
		actionError: document.querySelector("#action-error")?.textContent ?? null,
		signinError: document.querySelector("#signin-error")?.textContent ?? null,
	})`))
	if err != nil {
		state = fmt.Sprintf("page state unknown: %v", err)
	}
	if png, err := chromedp.Run(ctx, fullScreenshot()); err == nil {
		if path, err := saveArtifact(t, "failed.png", png); err == nil {
			state += "; screenshot " + path
		}
	}
	return "page " + state
}

// open loads url and waits until the console's view has loaded its data:
// main#view[data-ready=view]. An empty view only waits for the load. A
// page that is not found, or a server error, fails the test at once.
func (b *browser) open(t testing.TB, url, view string) {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	resp, err := chromedp.Run(ctx, chromedp.NavigateResponse(url))
	if err != nil {
		b.failed(t, "open "+url, err)
	}
	// resp is nil for a change of the hash only, or about:blank.
	if resp != nil && (resp.Status == http.StatusNotFound || resp.Status >= 500) {
		t.Fatalf("browser: GET %s answered %d %s: is the console served at / on --http?", resp.URL, resp.Status, resp.StatusText)
	}
	if view != "" {
		b.waitView(t, view)
	}
}

// viewReady is the page's own test for a loaded view.
func viewReady(view string) string {
	return fmt.Sprintf(`document.querySelector("main#view")?.dataset.ready === %q`, view)
}

// waitView waits until main#view[data-ready=view].
func (b *browser) waitView(t testing.TB, view string) {
	t.Helper()
	b.waitJS(t, fmt.Sprintf("the %s view to be ready (main#view[data-ready=%s])", view, view), viewReady(view))
}

// waitJS polls a JavaScript expression in the page until it is truthy,
// and fails the test after browserTimeout. A poll that a navigation cuts
// short (the page it ran in is gone) starts again in the new page.
func (b *browser) waitJS(t testing.TB, what, expr string) {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	for {
		deadline, _ := ctx.Deadline()
		_, err := chromedp.Run(ctx, chromedp.Poll[bool](`!!(`+expr+`)`,
			chromedp.WithPollingInterval(pollInterval), chromedp.WithPollingTimeout(time.Until(deadline))))
		switch {
		case err == nil:
			return
		case ctx.Err() != nil || errors.Is(err, chromedp.ErrPollingTimeout):
			b.failed(t, "wait for "+what, context.DeadlineExceeded)
		}
		select { // the page navigated away under the poll
		case <-ctx.Done():
		case <-time.After(pollInterval):
		}
	}
}

// evalJS returns the value of a JavaScript expression in the page
// (with chromedp.EvalAwaitPromise, of the promise it gives).
func evalJS[T any](t testing.TB, b *browser, expr string, opts ...chromedp.EvaluateOption) T {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, opts...))
	if err != nil {
		b.failed(t, "evaluate "+expr, err)
	}
	return v
}

// count returns how many elements match a CSS selector.
func (b *browser) count(t testing.TB, sel string) int {
	t.Helper()
	return evalJS[int](t, b, fmt.Sprintf(`document.querySelectorAll(%s).length`, jsString(sel)))
}

// text returns the trimmed text of the first element matching sel, and
// fails the test when there is none.
func (b *browser) text(t testing.TB, sel string) string {
	t.Helper()
	v := evalJS[*string](t, b, fmt.Sprintf(`document.querySelector(%s)?.textContent.trim() ?? null`, jsString(sel)))
	if v == nil {
		b.failed(t, "read the text of "+sel, errors.New("no such element"))
	}
	return *v
}

// attr returns an attribute of the first element matching sel, and fails
// the test when there is no such element or attribute.
func (b *browser) attr(t testing.TB, sel, name string) string {
	t.Helper()
	v := evalJS[*string](t, b, fmt.Sprintf(`document.querySelector(%s)?.getAttribute(%s) ?? null`, jsString(sel), jsString(name)))
	if v == nil {
		b.failed(t, fmt.Sprintf("read %s of %s", name, sel), errors.New("no such element or attribute"))
	}
	return *v
}

// click clicks the first element matching sel once it is visible.
func (b *browser) click(t testing.TB, sel string) {
	t.Helper()
	b.do(t, "click "+sel, chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible))
}

// fill replaces the value of an input with v, as typed.
func (b *browser) fill(t testing.TB, sel, v string) {
	t.Helper()
	b.do(t, fmt.Sprintf("type %q into %s", v, sel),
		chromedp.Clear(chromedp.CSS(sel), chromedp.NodeVisible),
		chromedp.SendKeys(chromedp.CSS(sel), v, chromedp.NodeVisible))
}

// jsString quotes s as a JavaScript string literal.
func jsString(s string) string {
	q, _ := json.Marshal(s)
	return string(q)
}

// fullScreenshot captures the whole page, beyond the viewport, as PNG.
func fullScreenshot() chromedp.Action[[]byte] {
	return func(ctx context.Context, tgt *chromedp.Target) ([]byte, error) {
		m, err := cdp.Call(ctx, tgt, page.GetLayoutMetrics, cdp.Empty{})
		if err != nil {
			return nil, err
		}
		size := m.CSSContentSize
		r, err := cdp.Call(ctx, tgt, page.CaptureScreenshot, page.CaptureScreenshotParams{
			Format:                page.CaptureScreenshotFormatPng,
			CaptureBeyondViewport: new(true),
			FromSurface:           new(true),
			Clip:                  &page.Viewport{X: 0, Y: 0, Width: size.Width, Height: size.Height, Scale: 1},
		})
		if err != nil {
			return nil, err
		}
		return r.Data, nil
	}
}

// screenshot saves a full-page PNG of the page as a test artifact named
// after the test and name, logs its path and returns it.
func (b *browser) screenshot(t testing.TB, name string) string {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	png, err := chromedp.Run(ctx, fullScreenshot())
	if err != nil {
		b.failed(t, "take a screenshot", err)
	}
	path, err := saveArtifact(t, name+".png", png)
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// artifactsDir is where tests leave files for people to look at:
// $REWIND_ARTIFACTS, or bin/artifacts/console/ of the repository.
func artifactsDir(t testing.TB) (string, error) {
	dir := os.Getenv("REWIND_ARTIFACTS")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), "bin", "artifacts", "console")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("artifacts directory: %w", err)
	}
	return dir, nil
}

// saveArtifact writes data to the artifacts directory as
// TEST_NAME-name (subtests' slashes become dashes), logs and returns the
// path.
func saveArtifact(t testing.TB, name string, data []byte) (string, error) {
	dir, err := artifactsDir(t)
	if err != nil {
		return "", err
	}
	base := strings.NewReplacer("/", "-", " ", "_", string(filepath.Separator), "-").Replace(t.Name() + "-" + name)
	path := filepath.Join(dir, base)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return "", fmt.Errorf("save artifact: %w", err)
	}
	t.Logf("artifact: %s", path)
	return path, nil
}
