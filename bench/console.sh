# Section "console" of bench/run.sh (sourced): the web console's load in
# a real browser. It runs the browser test TestConsoleLoad (integration/
# console_test.go): integration/seedload fills a data directory with 200
# volumes and one volume, big, with 100,000 versions; rewind serve --http
# serves it; headless Chromium (Debian's chromium) opens the volume list
# and big's timeline three times each and the test times navigation start
# to the page's data-ready mark. Target: both under 1 s. There is no peer
# to run side by side; the figures are absolute.

section_console() {
	section_begin console "Web console load (200 volumes, 100,000 versions)"
	command -v chromium >/dev/null || die "chromium is missing: run make deps"
	local art=$W/console
	rm -rf "$art"
	mkdir -p "$art"
	if ! (cd "$ROOT" && REWIND_ARTIFACTS=$art timeout "$STEP_TIMEOUT" go test -count=1 -run '^TestConsoleLoad$' ./integration) >"$W/last.err" 2>&1 ||
		[[ ! -s $art/load.txt ]]; then
		not_measured "TestConsoleLoad failed: $(lasterr)"
	else
		out '```'
		while IFS= read -r l; do out "$l"; done <"$art/load.txt"
		out '```'
		out ""
		out "Screenshots: $art/TestConsoleLoad-*.png"
	fi
	section_end
}
