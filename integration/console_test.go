package integration

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/rewind-dev/rewind/catalog"
	"github.com/rewind-dev/rewind/catalog/recovery"
)

// The web console, in a real browser: the flows of issue 17, against
// the page contract (ids, classes and data- attributes the console
// promises its tests).

// consoleVolume is what TestConsole serves: two imports of db01, the
// first labelled.
type consoleVolume struct {
	Name, Label string
	Size        int64
	Spec        string // VOLUME@<compact instant> of the label
	SHA         string // sha256 of the labelled instant
	Latest      string // sha256 of db01@latest, which differs
}

// newConsoleVolume imports db01 twice, labels the first import, and
// returns what the console should show of it.
func newConsoleVolume(t *testing.T, rw *rewind) consoleVolume {
	t.Helper()
	const size = 16 << 20
	v := consoleVolume{Name: "db01", Label: "before-upgrade", Size: size}
	data := make([]byte, size) // data in the first half, a hole after it
	copy(data, randomBytes(17, size/2))
	img := filepath.Join(t.TempDir(), "db01.img")
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	v.SHA = sha256File(t, img)
	rw.MustRun("import", v.Name, img)
	rw.MustRun("point", "add", v.Name+"@latest", v.Label)
	copy(data[size/4:], randomBytes(18, size/2)) // the upgrade
	if err := os.WriteFile(img, data, 0o644); err != nil {
		t.Fatal(err)
	}
	v.Latest = sha256File(t, img)
	rw.MustRun("import", v.Name, img)

	var points []catalog.Point
	mustJSON(t, rw.MustRun("--json", "point", "list", v.Name), &points)
	if len(points) != 1 || points[0].Label != v.Label {
		t.Fatalf("point list %s: %+v, want the one label %s", v.Name, points, v.Label)
	}
	v.Spec = v.Name + "@" + points[0].Time.Compact()
	return v
}

// signIn follows the token link and waits until the page says it is
// signed in.
func signIn(t testing.TB, b *browser, base, token string) {
	t.Helper()
	b.open(t, base+"/?token="+token, "")
	b.waitJS(t, `the signed-in page (body[data-signed-in="true"])`, `document.body?.dataset.signedIn === "true"`)
}

// TestConsole: without the token no volume shows; the volumes page fits
// a phone; then, in order in one browser: sign in with the token link,
// see the volumes, a change without the CSRF token refused, open a
// volume's timeline and pick a label's instant, clone it, recover it to
// a file served over NBD and watch the progress reach 100%, cut over,
// see the store. A screenshot of each page is saved.
func TestConsole(t *testing.T) {
	requireTool(t, "qemu-nbd", "qemu-utils")
	requireTool(t, "nbdcopy", "libnbd-bin")
	rw := newRewind(t)
	vol := newConsoleVolume(t, rw)
	if vol.SHA == vol.Latest {
		t.Fatal("the labelled instant reads as the latest one")
	}
	srv := rw.Serve(serveOptions{HTTP: true})
	consoleFlows(t, srv, "http://"+srv.HTTPAddr, srv.APIToken(t), vol)
}

// consoleFlows is TestConsole once rewind serves vol: the console at
// base, signed in with token.
func consoleFlows(t *testing.T, srv *server, base, token string, vol consoleVolume) {
	qemuNBD := requireTool(t, "qemu-nbd", "qemu-utils")
	const cloneName, recName = "db01-fix", "db01-rec"
	row := func(name string) string { return fmt.Sprintf(`tr[data-volume=%q]`, name) }
	recRow := fmt.Sprintf(`tr[data-recovery=%q]`, recName)

	t.Run("without the token", func(t *testing.T) {
		b := newBrowser(t, false)
		b.open(t, base+"/", "")
		b.waitJS(t, "the sign-in form (form#signin input#token)", `document.querySelector("form#signin input#token")`)
		requireNoVolume(t, b)
		if code := evalJS[int](t, b, `fetch("/v1/volumes").then(r => r.status)`, chromedp.EvalAwaitPromise); code != 401 {
			t.Errorf("GET /v1/volumes from the page without a session: %d, want 401", code)
		}
		b.screenshot(t, "signin")

		b.fill(t, "input#token", "wrong"+token)
		b.click(t, "button#signin-go")
		b.waitJS(t, "an error for a wrong token typed (#signin-error)", `document.querySelector("#signin-error")?.textContent.trim()`)
		requireNoVolume(t, b)

		b.open(t, base+"/?token=wrong"+token, "")
		b.waitJS(t, "an error for a wrong token in the link (#signin-error)", `document.querySelector("#signin-error")?.textContent.trim()`)
		requireNoVolume(t, b)
		b.screenshot(t, "wrong-token")
	})

	t.Run("on a phone", func(t *testing.T) {
		p := newBrowser(t, true)
		signIn(t, p, base, token)
		p.open(t, base+"/#/volumes", "volumes")
		if p.count(t, row(vol.Name)) != 1 {
			t.Errorf("the phone's #/volumes does not list %s", vol.Name)
		}
		if w := evalJS[int](t, p, `document.documentElement.scrollWidth`); w > phoneWidth {
			t.Errorf("the volumes page is %d px wide on a %d px phone: it scrolls sideways", w, phoneWidth)
		}
		p.screenshot(t, "volumes-phone")
	})

	b := newBrowser(t, false)
	steps := []struct {
		name     string
		run      func(t *testing.T)
		optional bool // the later steps do not need it
	}{
		{"sign in with the token link", func(t *testing.T) {
			signIn(t, b, base, token)
			if loc := evalJS[string](t, b, `location.href`); strings.Contains(loc, token) {
				t.Errorf("the token stays in the address bar after signing in: %s", loc)
			}
			ctx, cancel := b.step()
			defer cancel()
			res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{URLs: []string{base + "/"}})
			if err != nil {
				t.Fatalf("cookies: %v", err)
			}
			session := false
			for _, c := range res.Cookies {
				session = session || c.HTTPOnly && c.SameSite == network.CookieSameSiteStrict
			}
			if !session {
				t.Errorf("no HttpOnly, SameSite=Strict session cookie after signing in: %+v", res.Cookies)
			}
			b.waitJS(t, "button#signout", `document.querySelector("button#signout")`)
			b.screenshot(t, "signed-in")
		}, false},
		{"see the volumes", func(t *testing.T) {
			b.click(t, "a#nav-volumes")
			b.waitView(t, "volumes")
			if n := b.count(t, "table#volumes tr[data-volume]"); n != 1 {
				t.Errorf("%d rows in table#volumes, want 1 (%s)", n, vol.Name)
			}
			for _, cell := range []string{"kind", "size", "last", "versions", "stored", "protection", "recovery"} {
				if b.count(t, row(vol.Name)+" ."+cell) != 1 {
					t.Errorf("the row of %s has no .%s cell", vol.Name, cell)
				}
			}
			if got := b.text(t, row(vol.Name)+" .versions"); got != "2" {
				t.Errorf("%s .versions reads %q, want 2", row(vol.Name), got)
			}
			b.screenshot(t, "volumes")
		}, false},
		{"the list follows changes made elsewhere", func(t *testing.T) {
			// A clone made and removed through the API, not the page: the
			// open list shows it, then not, without a reload.
			const other = "db01-elsewhere"
			b.open(t, base+"/#/volumes", "volumes")
			api := func(method, path, body string) {
				t.Helper()
				req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
				req.Header.Set("Authorization", "Bearer "+token)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					t.Fatalf("%s %s: %s", method, path, resp.Status)
				}
			}
			api("POST", "/v1/clones", fmt.Sprintf(`{"from":%s,"name":%s}`, jsString(vol.Name+"@latest"), jsString(other)))
			b.waitJS(t, other+" listed without a reload", fmt.Sprintf(`document.querySelector(%s)`, jsString(row(other))))
			api("DELETE", "/v1/volumes/"+other, "")
			b.waitJS(t, other+" gone from the list without a reload", fmt.Sprintf(`!document.querySelector(%s) && document.querySelector(%s)`, jsString(row(other)), jsString(row(vol.Name))))
		}, true},
		{"a change without the CSRF token is refused", func(t *testing.T) {
			// The session cookie goes with this fetch; the page's CSRF
			// token does not.
			code := evalJS[int](t, b, fmt.Sprintf(`fetch("/v1/clones", {method: "POST", headers: {"Content-Type": "application/json"},
				body: JSON.stringify({from: %s, name: "csrf-probe"})}).then(r => r.status)`, jsString(vol.Name+"@latest")), chromedp.EvalAwaitPromise)
			if code != 401 && code != 403 {
				t.Errorf("POST /v1/clones with the session cookie and no CSRF token: %d, want 403", code)
			}
			b.open(t, base+"/#/recoveries", "recoveries")
			b.open(t, base+"/#/volumes", "volumes")
			if b.count(t, row("csrf-probe")) != 0 {
				t.Error("a clone made without the CSRF token is listed")
			}
		}, true},
		{"open the timeline and pick the label", func(t *testing.T) {
			b.open(t, base+"/#/volumes", "volumes")
			b.click(t, row(vol.Name)+" a.open")
			b.waitView(t, "volume")
			if got := b.attr(t, "#timeline", "data-versions"); got != "2" {
				t.Errorf("#timeline[data-versions] = %q, want 2", got)
			}
			pickLabel(t, b, vol)
			uri := b.text(t, "code#nbd-uri")
			if !strings.HasPrefix(uri, "nbd://"+srv.NBDAddr+"/") {
				t.Fatalf("code#nbd-uri reads %q, want an export of nbd://%s", uri, srv.NBDAddr)
			}
			if fuse := b.text(t, "code#fuse-path"); fuse != "" {
				t.Errorf("code#fuse-path reads %q from a daemon without --mount, want nothing", fuse)
			}
			if got := exportSHA(t, uri); got != vol.SHA {
				t.Errorf("%s reads sha256 %s, want the labelled instant's %s", uri, got[:12], vol.SHA[:12])
			}
			b.screenshot(t, "timeline")
		}, false},
		{"clone it", func(t *testing.T) {
			openAction(t, b, "button#btn-clone")
			b.fill(t, "input#clone-name", cloneName)
			b.click(t, "button#clone-go")
			if msg := actionResult(t, b); !strings.Contains(msg, cloneName) {
				t.Errorf("#action-result reads %q, want it to name %s", msg, cloneName)
			}
			b.screenshot(t, "cloned")
			closeAction(t, b)
			b.open(t, base+"/#/volumes", "volumes")
			if b.count(t, row(cloneName)) != 1 {
				t.Fatalf("the clone %s is not listed on #/volumes", cloneName)
			}
			if got := exportSHA(t, srv.URI(cloneName)); got != vol.SHA {
				t.Errorf("the clone %s reads sha256 %s, want the labelled instant's %s", cloneName, got[:12], vol.SHA[:12])
			}
			b.screenshot(t, "volumes-with-clone")
		}, false},
		{"recover it to a file and watch the progress", func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "prod.img")
			if err := os.WriteFile(file, make([]byte, vol.Size), 0o644); err != nil {
				t.Fatal(err)
			}
			// qemu-nbd takes writes at 4 MiB/s, so that the copy lasts
			// long enough for the page to show it moving.
			port := freePort(t)
			slowNBDTarget(t, qemuNBD, file, port)
			target := fmt.Sprintf("nbd://127.0.0.1:%d/prod", port)

			b.open(t, base+"/#/volumes/"+vol.Name, "volume")
			pickLabel(t, b, vol)
			openAction(t, b, "button#btn-recover")
			b.fill(t, "input#recover-target", target)
			b.fill(t, "input#recover-as", recName)
			b.click(t, "button#recover-go")
			b.waitView(t, "recoveries")
			b.waitJS(t, recRow+" on #/recoveries", fmt.Sprintf(`document.querySelector(%s)`, jsString(recRow)))
			// Cancelled, the copy offers Retry…, which asks for the target
			// (the same one, offered) and copies into it again.
			acceptNextDialog(t, b, func() { b.click(t, recRow+" button.cancel") })
			b.waitJS(t, recRow+" cancelled", fmt.Sprintf(`document.querySelector(%s)`, jsString(recRow+`[data-state="cancelled"] button.retry`)))
			msg := acceptNextDialog(t, b, func() { b.click(t, recRow+" button.retry") })
			t.Logf("retry asked: %q", msg)
			b.waitJS(t, recRow+" copying again", fmt.Sprintf(`document.querySelector(%s)`, jsString(recRow+`[data-state="copying"]`)))
			// Each poll notes the progress the page shows, when it changed.
			b.waitJS(t, recRow+" .progress to reach 100%", fmt.Sprintf(`((shown) => {
				const seen = (window.__progressSeen ||= []);
				if (shown && seen.at(-1) !== shown) seen.push(shown);
				return parseFloat(shown) >= 100;
			})(document.querySelector(%s)?.textContent.trim())`, jsString(recRow+" .progress")))
			seen := evalJS[[]string](t, b, `window.__progressSeen`)
			t.Logf("the page showed the progress as %q; rate %q, eta %q, state %q", seen,
				b.text(t, recRow+" .rate"), b.text(t, recRow+" .eta"), b.text(t, recRow+" .state"))
			if len(seen) < 2 {
				t.Errorf("the page showed the progress only as %q while the copy took seconds: it does not update by itself", seen)
			}
			b.waitJS(t, recRow+`[data-state="converged"]`, fmt.Sprintf(`document.querySelector(%s)`, jsString(recRow+`[data-state="converged"]`)))
			b.screenshot(t, "recoveries")
			if got := sha256File(t, file); got != vol.SHA {
				t.Errorf("the target file holds sha256 %s, want the labelled instant's %s", got[:12], vol.SHA[:12])
			}

			// Cut over: the button asks first.
			msg = acceptNextDialog(t, b, func() { b.click(t, recRow+" button.cutover") })
			t.Logf("cutover asked: %q", msg)
			b.waitJS(t, recRow+`[data-state="cut over"]`, fmt.Sprintf(`document.querySelector(%s)`, jsString(recRow+`[data-state="cut over"]`)))
			if got := sha256File(t, file); got != vol.SHA {
				t.Errorf("after cutover the target file holds sha256 %s, want %s", got[:12], vol.SHA[:12])
			}
			b.screenshot(t, "recoveries-cut-over")
		}, false},
		{"resume a failed copy", func(t *testing.T) {
			// The copy runs at 512 KiB/s into nbdkit, which refuses every
			// request (EIO) once the trigger file exists: the copy fails
			// after it saved progress, and Resume… goes on from it.
			nbdkit := requireTool(t, "nbdkit", "nbdkit")
			const name = "db01-resume"
			recRow := fmt.Sprintf(`tr[data-recovery=%q]`, name)
			dir := t.TempDir()
			file, trigger := filepath.Join(dir, "prod.img"), filepath.Join(dir, "fail-writes")
			if err := os.WriteFile(file, make([]byte, vol.Size), 0o644); err != nil {
				t.Fatal(err)
			}
			port := freePort(t)
			startDaemon(t, daemonSpec{Path: nbdkit, Args: []string{"-f", "-i", "127.0.0.1", "-p", fmt.Sprint(port),
				"--filter=error", "file", "file=" + file,
				"error=EIO", "error-rate=100%", "error-file=" + trigger},
				ReadyTCP: []string{fmt.Sprintf("127.0.0.1:%d", port)}})
			target := fmt.Sprintf("nbd://127.0.0.1:%d/prod", port)
			status := func() recovery.Status {
				t.Helper()
				var st recovery.Status
				mustJSON(t, consoleAPI(t, base, token, "GET", "/v1/recoveries/"+name, ""), &st)
				return st
			}
			consoleAPI(t, base, token, "POST", "/v1/recoveries", fmt.Sprintf(`{"from":%s,"target":%s,"as":%s,"bwlimit":%d}`,
				jsString(vol.Spec), jsString(target), jsString(name), 512<<10))
			// The copy saves its progress every 5 s: let it pass one.
			started := time.Now()
			for time.Since(started) < 6*time.Second || status().Done < 1<<20 {
				if time.Since(started) > time.Minute {
					t.Fatalf("the copy is not under way after a minute: %+v", status())
				}
				time.Sleep(200 * time.Millisecond)
			}
			if st := status(); st.State != recovery.StateCopying {
				t.Fatalf("the copy was to run 16 s, yet after %v it is %s", time.Since(started).Round(time.Millisecond), st.State)
			}
			if err := os.WriteFile(trigger, nil, 0o644); err != nil {
				t.Fatal(err)
			}
			b.open(t, base+"/#/volumes", "volumes") // the recoveries view anew, not the one left open
			b.open(t, base+"/#/recoveries", "recoveries")
			b.waitJS(t, recRow+" failed and resumable", fmt.Sprintf(`document.querySelector(%s)?.textContent === "Resume…"`,
				jsString(recRow+`[data-state="failed"] button.retry`)))
			failed := status()
			if !failed.Resumable || failed.Done >= failed.Total {
				t.Fatalf("the failed copy: %+v, want it resumable and part way", failed)
			}
			os.Remove(trigger)
			msg := acceptNextDialog(t, b, func() { b.click(t, recRow+" button.retry") })
			if !strings.Contains(msg, "from where the copy stopped") {
				t.Errorf("Resume… asked %q, want it to say it goes on from where the copy stopped", msg)
			}
			b.waitJS(t, recRow+" converged", fmt.Sprintf(`document.querySelector(%s)`, jsString(recRow+`[data-state="converged"]`)))
			// Copied counts what the resumed copy wrote: not the data
			// that the failed one had copied and saved (at least 1 MiB
			// of the volume's 8 MiB of data) again.
			if st := status(); st.Copied > int64(vol.Size)/2-512<<10 {
				t.Errorf("the resumed copy wrote %d bytes of the %d of data: it started over", st.Copied, vol.Size/2)
			}
			if got := sha256File(t, file); got != vol.SHA {
				t.Errorf("the resumed copy's target holds sha256 %s, want the labelled instant's %s", got[:12], vol.SHA[:12])
			}
			b.screenshot(t, "recoveries-resumed")
			// Cancelled, the copy lets go of the target, so that nbdkit
			// can stop.
			consoleAPI(t, base, token, "DELETE", "/v1/recoveries/"+name, "")
		}, true},
		{"see the store", func(t *testing.T) {
			b.click(t, "a#nav-store")
			b.waitView(t, "store")
			for _, cell := range []string{"dedup", "compression", "stored", "free", "last-verify", "last-gc", "last-prune", "errors"} {
				if b.count(t, "#store ."+cell) != 1 {
					t.Errorf("#store has no .%s", cell)
				}
			}
			b.screenshot(t, "store")
		}, false},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.run) && !s.optional {
			t.Fatalf("%q failed: the later steps need it", s.name)
		}
	}

}

// consoleAPI calls the API at base with the bearer token and returns the
// answer's body, failing the test unless it succeeded.
func consoleAPI(t *testing.T, base, token, method, path, body string) string {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return string(b)
}

// requireNoVolume fails the test when the page shows any volume or says
// it is signed in.
func requireNoVolume(t *testing.T, b *browser) {
	t.Helper()
	if n := b.count(t, "tr[data-volume]"); n != 0 {
		t.Errorf("%d tr[data-volume] without signing in, want none", n)
	}
	if b.count(t, `body[data-signed-in="true"]`) != 0 {
		t.Error(`body[data-signed-in="true"] without signing in`)
	}
}

// pickLabel clicks the label's mark on the timeline and waits until the
// page has picked its instant.
func pickLabel(t *testing.T, b *browser, vol consoleVolume) {
	t.Helper()
	b.click(t, fmt.Sprintf(`.mark[data-label=%q]`, vol.Label))
	b.waitJS(t, fmt.Sprintf(`the label's instant (#instant[data-spec=%q])`, vol.Spec),
		fmt.Sprintf(`document.querySelector("#instant")?.dataset.spec === %s`, jsString(vol.Spec)))
}

// openAction clicks an action's button and waits for its dialog.
func openAction(t *testing.T, b *browser, button string) {
	t.Helper()
	b.click(t, button)
	b.waitJS(t, "dialog#action to open after "+button, `document.querySelector("dialog#action")?.open`)
}

// closeAction closes dialog#action as a user would, with Escape.
func closeAction(t *testing.T, b *browser) {
	t.Helper()
	b.do(t, "press Escape", chromedp.KeyEvent(kb.Escape))
	b.waitJS(t, "dialog#action to close on Escape", `!document.querySelector("dialog#action")?.open`)
}

// actionResult waits for the action's outcome and returns
// #action-result, failing the test with #action-error.
func actionResult(t *testing.T, b *browser) string {
	t.Helper()
	b.waitJS(t, "#action-result or #action-error", `document.querySelector("#action-result")?.textContent.trim() || document.querySelector("#action-error")?.textContent.trim()`)
	if msg := evalJS[string](t, b, `document.querySelector("#action-error")?.textContent.trim() ?? ""`); msg != "" {
		t.Fatalf("#action-error: %s", msg)
	}
	return b.text(t, "#action-result")
}

// acceptNextDialog runs act, accepts the confirm(), alert or prompt (with
// the text it offers) that act opens, and returns the dialog's message.
// act blocks while the dialog is open, so the dialog is answered from
// another goroutine.
func acceptNextDialog(t *testing.T, b *browser, act func()) string {
	t.Helper()
	ctx, cancel := b.step()
	defer cancel()
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	answered := make(chan string, 1)
	go func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			// A prompt is answered with what it offers, as a user who
			// presses OK.
			answer := page.HandleJavaScriptDialogParams{Accept: true, PromptText: ev.DefaultPrompt}
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, answer); err == nil {
				answered <- ev.Message
			}
			return
		}
	}()
	act()
	select {
	case msg := <-answered:
		return msg
	case <-ctx.Done():
		t.Fatalf("no dialog to confirm within %v", browserTimeout)
		return ""
	}
}

// TestConsoleLoad measures, in the browser, how long the console takes
// to show 200 volumes, and the timeline of a volume with 100,000
// versions: from the start of the navigation to main#view[data-ready].
// The figures are logged and written to the artifacts directory as
// load.txt (docs/benchmarks.md quotes them); nothing here asserts a time.
func TestConsoleLoad(t *testing.T) {
	const volumes, versions = 200, 100_000
	rw := newRewind(t)
	seed := seedLoad(t, rw.Data, volumes, versions)
	srv := rw.Serve(serveOptions{HTTP: true})
	var listed []catalog.VolumeInfo
	mustJSON(t, rw.MustRun("--json", "volume", "list"), &listed)
	if len(listed) != volumes {
		t.Fatalf("the daemon lists %d volumes, want %d", len(listed), volumes)
	}
	consoleLoad(t, "http://"+srv.HTTPAddr, srv.APIToken(t), seed)
}

// consoleLoad is TestConsoleLoad once rewind serves seed: the console at
// base, signed in with token.
func consoleLoad(t *testing.T, base, token string, seed loadSeed) {
	b := newBrowser(t, false)
	signIn(t, b, base, token)
	b.watchReady(t)

	const runs = 3
	var list, timeline []time.Duration
	for range runs {
		d, rows := b.timeLoad(t, base+"/#/volumes", "volumes")
		if rows != len(seed.Volumes) {
			t.Fatalf("#/volumes was ready with %d rows, want %d", rows, len(seed.Volumes))
		}
		list = append(list, d)
	}
	b.screenshot(t, "volumes")
	for range runs {
		d, _ := b.timeLoad(t, base+"/#/volumes/"+seed.Big, "volume")
		timeline = append(timeline, d)
	}
	if got := b.attr(t, "#timeline", "data-versions"); got != fmt.Sprint(seed.Versions) {
		t.Errorf("the timeline of %s covers %s versions, want %d", seed.Big, got, seed.Versions)
	}
	for _, label := range seed.Labels {
		if b.count(t, fmt.Sprintf(`.mark[data-label=%q]`, label)) != 1 {
			t.Errorf("the timeline of %s has no mark for %s", seed.Big, label)
		}
	}
	b.screenshot(t, "timeline")

	report := fmt.Sprintf("console load, in headless Chromium, from navigation start to main#view[data-ready] (%d loads each)\n"+
		"volume list, %d volumes: %s\n"+
		"timeline of %s, %d versions: %s\n"+
		"seeding the data directory (integration/seedload): %v\n",
		runs, len(seed.Volumes), durations(list), seed.Big, seed.Versions, durations(timeline), seed.Took.Round(time.Millisecond))
	t.Log(report)
	dir, err := artifactsDir(t)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "load.txt")
	if err := os.WriteFile(path, []byte(report), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("artifact: %s", path)
}

// durations prints load times in milliseconds.
func durations(ds []time.Duration) string {
	var s []string
	for _, d := range ds {
		s = append(s, fmt.Sprintf("%d ms", d.Milliseconds()))
	}
	return strings.Join(s, ", ")
}

// readyWatcher runs in every document the tab loads, before the page's
// own scripts: it notes, in the page's clock (milliseconds since the
// navigation started), when main#view first says each view is ready,
// and how many volume rows there were then.
const readyWatcher = `(() => {
	const seen = {};
	window.__rewindReady = seen;
	new MutationObserver(() => {
		const ready = document.querySelector("main#view")?.dataset.ready;
		if (ready && !(ready in seen)) {
			seen[ready] = {ms: performance.now(), rows: document.querySelectorAll("tr[data-volume]").length};
		}
	}).observe(document, {subtree: true, attributes: true, attributeFilter: ["data-ready"]});
})()`

// watchReady installs readyWatcher in the documents the tab loads from
// now on.
func (b *browser) watchReady(t testing.TB) {
	t.Helper()
	b.do(t, "install the ready watcher", chromedp.Func(func(ctx context.Context, tgt *chromedp.Target) error {
		_, err := cdp.Call(ctx, tgt, page.AddScriptToEvaluateOnNewDocument, page.AddScriptToEvaluateOnNewDocumentParams{Source: readyWatcher})
		return err
	}))
}

// timeLoad loads url afresh (from about:blank, so the whole page loads,
// not just a hash change) and returns how long after the start of the
// navigation the view was ready, by the page's clock, and how many
// volume rows it had then.
func (b *browser) timeLoad(t testing.TB, url, view string) (time.Duration, int) {
	t.Helper()
	b.open(t, "about:blank", "")
	b.open(t, url, view)
	type mark struct {
		MS   float64 `json:"ms"`
		Rows int     `json:"rows"`
	}
	m := evalJS[*mark](t, b, fmt.Sprintf(`window.__rewindReady?.[%s] ?? null`, jsString(view)))
	if m == nil {
		t.Fatalf("the ready watcher saw no data-ready=%s on %s", view, url)
	}
	return time.Duration(m.MS * float64(time.Millisecond)), m.Rows
}
