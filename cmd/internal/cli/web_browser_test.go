package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
	"rsc.io/qr"

	"github.com/pzone/pzone/zone/mgmt"
	"github.com/pzone/pzone/zone/web"
)

// The dashboard in a real headless Chromium, driven over the DevTools
// protocol, against the real pzh and pzp binaries (this test binary as
// them, as in the scripts): log in, answer the TOTP query, see a device
// come online without reloading, create an invite and read its QR code,
// revoke the device, check the cookie's flags, end a second browser's
// session from the first, log out. It writes a screenshot of the
// dashboard to $PZONE_ARTIFACTS (make test: artifacts/), else to the
// test's artifact directory.

func TestDashboardInBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium is not installed (Debian package chromium; .ci/run installs it): the dashboard's browser test needs it")
	}
	dir := t.TempDir()
	env := append(os.Environ(), "HOME="+dir, "GORACE=atexit_sleep_ms=0")
	hubDir, devDir := filepath.Join(dir, "hub"), filepath.Join(dir, "laptop")
	port, ok1 := freePort()
	webPort, ok2 := freePort()
	if !ok1 || !ok2 {
		t.Fatal("no free port")
	}
	run(t, env, "", "pzh", "--data", hubDir, "init", "--zone", "home", "--public-addr", fmt.Sprintf("127.0.0.1:%d", port))
	daemon(t, env, "pzh", "--data", hubDir, "serve", "--web", fmt.Sprintf("127.0.0.1:%d", webPort))
	run(t, env, "", "pzh", "--data", hubDir, "wait", "ready")
	url := fmt.Sprintf("http://127.0.0.1:%d/", webPort)

	run(t, env, "correct horse battery staple\n", "pzh", "--data", hubDir, "operator", "add", "alice")
	var enr mgmt.Enrolment
	if err := json.Unmarshal([]byte(run(t, env, "", "pzh", "--data", hubDir, "operator", "mfa", "enroll", "alice", "--json")), &enr); err != nil {
		t.Fatal(err)
	}
	code := func(at time.Time) string {
		c, err := mgmt.TOTPCode(enr.Secret, at)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	confirmed := run(t, env, "", "pzh", "--data", hubDir, "operator", "mfa", "confirm", "alice", code(time.Now()))
	var recovery []string
	for _, l := range strings.Split(confirmed, "\n") {
		if l = strings.TrimSpace(l); strings.Count(l, "-") == 3 && len(l) == 19 {
			recovery = append(recovery, l)
		}
	}
	if len(recovery) == 0 {
		t.Fatalf("no recovery codes in %q", confirmed)
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 1400))
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	browser, cancel := chromedp.NewContext(allocCtx)
	defer cancel()
	if err := chromedp.Do(browser); err != nil { // starts the browser, for as long as browser lasts
		t.Fatalf("start chromium: %v", err)
	}
	ctx, cancelT := context.WithTimeout(browser, 3*time.Minute)
	defer cancelT()
	shoot := func(ctx context.Context, name string) {
		if shot, err := chromedp.Run(ctx, chromedp.FullScreenshot(100)); err == nil {
			saveArtifact(t, name, shot)
		}
	}
	do := func(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			shoot(ctx, "failed.png")
			t.Fatalf("%s: %v", what, err)
		}
	}
	get := func(ctx context.Context, what string, a chromedp.Action[string]) string {
		t.Helper()
		v, err := chromedp.Run(ctx, a)
		if err != nil {
			shoot(ctx, "failed.png")
			t.Fatalf("%s: %v", what, err)
		}
		return v
	}
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	login := func(ctx context.Context, second string) {
		t.Helper()
		do(ctx, "log in",
			chromedp.Navigate(url), chromedp.WaitVisible(css("#login-view")),
			chromedp.SendKeys(css("#login-name"), "alice"),
			chromedp.SendKeys(css("#login-password"), "correct horse battery staple"),
			chromedp.Click(css("#login-form button[type=submit]")),
			chromedp.WaitVisible(css("#mfa-view")))
		do(ctx, "answer the TOTP query",
			chromedp.SendKeys(css("#mfa-code"), second),
			chromedp.Click(css("#mfa-form button[type=submit]")),
			chromedp.WaitVisible(css("#dashboard")),
			chromedp.WaitVisible(css("#zone-id:not(:empty)")))
	}

	// Log in: asked for the code, which is computed from the enrolled
	// secret (the next step's: the current one confirmed the enrolment).
	start := time.Now()
	login(ctx, code(time.Now().Add(30*time.Second)))
	t.Logf("login to dashboard: %v (two forms, with argon2id and the TOTP check)", time.Since(start).Round(time.Millisecond))

	// The cookie, as the browser holds it.
	res, err := chromedp.Call(ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Cookies) != 1 {
		t.Fatalf("cookies %+v", res.Cookies)
	}
	if c := res.Cookies[0]; c.Name != web.CookieName || !c.HTTPOnly || c.SameSite != network.CookieSameSiteStrict || c.Path != "/" || c.Secure {
		t.Fatalf("cookie %s: HttpOnly %v, SameSite %v, Path %q, Secure %v (plain HTTP on loopback: not Secure)", c.Name, c.HTTPOnly, c.SameSite, c.Path, c.Secure)
	}

	// A device pairs and comes online: its row says so, without a reload.
	token := strings.TrimSpace(run(t, env, "", "pzh", "--data", hubDir, "invite", "--device", "laptop"))
	run(t, env, "", "pzp", "--data", devDir, "pair", token)
	daemon(t, env, "pzp", "--data", devDir, "run")
	do(ctx, "see the device come online", chromedp.WaitVisible(css(`tr.state-online[data-device="laptop"]`)))

	// An invite made in the page, and its QR code.
	do(ctx, "create an invite",
		chromedp.SendKeys(css("#invite-device"), "phone"),
		chromedp.Click(css("#invite-code")),
		chromedp.Click(css("#invite-form button[type=submit]")),
		chromedp.WaitVisible(css(`#invite-qr[src^="data:image/png"]`)),
		chromedp.WaitVisible(css("#invite-code-line")),
		chromedp.WaitVisible(css(`tr[data-invite] td`)))
	shown := get(ctx, "read the token", chromedp.Text(css("#invite-token")))
	src, err := chromedp.Run(ctx, chromedp.AttributeValue(css("#invite-qr"), "src"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := qr.Encode(shown, qr.M)
	if err != nil {
		t.Fatal(err)
	}
	want.Scale = 6
	got, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(src.Value, "data:image/png;base64,"))
	if err != nil || !bytes.Equal(got, want.PNG()) {
		t.Fatalf("the QR code in the page is not the token %q's (%v)", shown, err)
	}
	if code := get(ctx, "read the code", chromedp.Text(css("#invite-code-text"))); !regexp.MustCompile(`^1-[a-z]+-[a-z]+-[a-z]+-[a-z]+$`).MatchString(code) {
		t.Fatalf("the page's short code: %q", code)
	}
	if invites := run(t, env, "", "pzh", "--data", hubDir, "invites"); !strings.Contains(invites, "phone") || !strings.Contains(invites, "(code 1, 0 wrong)") {
		t.Fatalf("pzh invites does not list the page's invite:\n%s", invites)
	}

	// A policy rule added in the page is the zone's (pzh policy list
	// shows it), a check in the page says what pzh policy check says, a
	// mistake is refused with the command's words, and Remove removes it.
	do(ctx, "add a policy rule",
		chromedp.SetValue(css("#rule-effect"), "deny"),
		chromedp.SendKeys(css("#rule-from"), "bob/tv"),
		chromedp.SendKeys(css("#rule-to"), "laptop/*"),
		chromedp.SendKeys(css("#rule-id"), "no-tv"),
		chromedp.Click(css("#rule-form button[type=submit]")),
		chromedp.WaitVisible(css(`tr[data-rule="no-tv"]`)))
	if rules := run(t, env, "", "pzh", "--data", hubDir, "policy", "list"); !regexp.MustCompile(`no-tv +deny +bob/tv +laptop/\*`).MatchString(rules) {
		t.Fatalf("pzh policy list after adding a rule in the page:\n%s", rules)
	}
	do(ctx, "check a call",
		chromedp.SendKeys(css("#check-from"), "bob/tv"),
		chromedp.SendKeys(css("#check-to"), "laptop/files"),
		chromedp.Click(css("#check-form button[type=submit]")),
		chromedp.WaitVisible(css("#check-result:not(:empty)")))
	verdict := get(ctx, "read the verdict", chromedp.Text(css("#check-result")))
	if cli := strings.TrimSpace(run(t, env, "", "pzh", "--data", hubDir, "policy", "check", "--from", "bob/tv", "--to", "laptop/files")); verdict != cli {
		t.Fatalf("the page's check says %q, pzh policy check %q", verdict, cli)
	}
	do(ctx, "add a rule with a mistake",
		chromedp.SendKeys(css("#rule-from"), "Bob"),
		chromedp.SendKeys(css("#rule-to"), "*"),
		chromedp.Click(css("#rule-form button[type=submit]")),
		chromedp.WaitVisible(css("#action-error:not(:empty)")))
	if msg := get(ctx, "read the refusal", chromedp.Text(css("#action-error"))); !strings.Contains(msg, `invalid WHO "Bob"`) {
		t.Fatalf("a bad rule in the page: %q", msg)
	}
	do(ctx, "remove the rule",
		chromedp.Click(css(`tr[data-rule="no-tv"] button`)),
		chromedp.Click(css(`tr[data-rule="no-tv"] button.danger`)),
		chromedp.WaitNotPresent(css(`tr[data-rule="no-tv"]`)))
	if rules := run(t, env, "", "pzh", "--data", hubDir, "policy", "list"); strings.Contains(rules, "no-tv") {
		t.Fatalf("pzh policy list after removing the rule in the page:\n%s", rules)
	}

	// Service tokens: a template, a lot of two issued in the page (shown
	// once), the lot revoked; pzh tokens list agrees at each step.
	do(ctx, "save a template",
		chromedp.SendKeys(css("#template-name"), "guest"),
		chromedp.SendKeys(css("#template-binding"), "1h"),
		chromedp.Click(css("#template-single")),
		chromedp.Click(css("#template-form button[type=submit]")),
		chromedp.WaitVisible(css(`tr[data-template="guest"]`)),
		chromedp.WaitReady(css(`#issue-template option[value="guest"]`)))
	do(ctx, "issue a lot",
		chromedp.SendKeys(css("#issue-lot"), "party"),
		chromedp.SetValue(css("#issue-count"), "2"),
		chromedp.Click(css("#issue-form button[type=submit]")),
		chromedp.WaitVisible(css("#issued")),
		chromedp.WaitVisible(css(`#service-token-rows tr[data-token]:nth-child(2)`)))
	issued := strings.Fields(get(ctx, "read the tokens", chromedp.Text(css("#issued-tokens"))))
	if listed := run(t, env, "", "pzh", "--data", hubDir, "tokens", "list", "--lot", "party"); len(issued) != 2 || strings.Count(listed, "active") != 2 {
		t.Fatalf("issued in the page: %q; pzh tokens list --lot party:\n%s", issued, listed)
	}
	do(ctx, "revoke the lot",
		chromedp.Click(css(`#service-token-rows tr[data-token] span:nth-of-type(2) button`)),
		chromedp.Click(css(`#service-token-rows tr[data-token] span:nth-of-type(2) button.danger`)),
		chromedp.WaitNotPresent(css(`#service-token-rows button`)))
	if listed := run(t, env, "", "pzh", "--data", hubDir, "tokens", "list", "--lot", "party"); strings.Count(listed, "revoked") != 2 {
		t.Fatalf("pzh tokens list after revoking the lot in the page:\n%s", listed)
	}
	shoot(ctx, "dashboard.png")
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](`refreshAll().then(() => true)`, chromedp.EvalAwaitPromise)); err != nil {
		t.Fatalf("refresh every list: %v", err)
	}
	if msg := get(ctx, "read the page's errors", chromedp.Text(css("#action-error"))); msg != "" {
		t.Fatalf("the dashboard shows an error: %s", msg)
	}
	for _, none := range []string{"#friend-rows", "#binding-rows", "#token-rows"} {
		if text := get(ctx, "read "+none, chromedp.Text(css(none))); !strings.HasPrefix(text, "No ") {
			t.Fatalf("%s: %q, want its empty-list line", none, text)
		}
	}

	// A second browser (its own cookies), logged in with a recovery code;
	// the first ends its session, and it is logged out at once.
	ctx2, cancel2 := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	defer cancel2()
	ctx2, cancelT2 := context.WithTimeout(ctx2, 3*time.Minute)
	defer cancelT2()
	login(ctx2, recovery[0])
	do(ctx2, "see the sessions", chromedp.WaitVisible(css(`#session-rows tr`)))
	second, err := chromedp.Run(ctx2, chromedp.Evaluate[string](`state.session.id`))
	if err != nil {
		t.Fatal(err)
	}
	row := fmt.Sprintf(`tr[data-session="%s"]`, second)
	do(ctx, "end the second session",
		chromedp.Reload(), chromedp.WaitVisible(css("#dashboard")),
		chromedp.WaitVisible(css(row+" button")),
		chromedp.Click(css(row+" button")),
		chromedp.Click(css(row+" button.danger")),
		chromedp.WaitNotPresent(css(row)))
	do(ctx2, "see the second browser logged out", chromedp.WaitVisible(css("#login-view")))

	// Revoke the device, with the in-place confirmation.
	do(ctx, "revoke the device",
		chromedp.Click(css(`tr[data-device="laptop"] button`)),
		chromedp.Click(css(`tr[data-device="laptop"] button.danger`)),
		chromedp.WaitVisible(css(`tr.state-revoked[data-device="laptop"]`)))
	if devices := run(t, env, "", "pzh", "--data", hubDir, "devices"); !strings.Contains(devices, "revoked") {
		t.Fatalf("pzh devices after the revocation in the page:\n%s", devices)
	}

	// A one-time login link (as make demo prints one), in a third
	// browser: in once, and the address bar no longer holds it.
	link := strings.TrimSpace(run(t, env, "", "pzh", "--data", hubDir, "web", "login", "alice"))
	ctx3, cancel3 := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	defer cancel3()
	ctx3, cancelT3 := context.WithTimeout(ctx3, 3*time.Minute)
	defer cancelT3()
	do(ctx3, "log in with a link", chromedp.Navigate(link), chromedp.WaitVisible(css("#dashboard")))
	if loc := get(ctx3, "read the address", chromedp.Location()); strings.Contains(loc, "pzlogin_") {
		t.Fatalf("the login link stays in the address bar: %s", loc)
	}
	ctx4, cancel4 := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	defer cancel4()
	ctx4, cancelT4 := context.WithTimeout(ctx4, 3*time.Minute)
	defer cancelT4()
	do(ctx4, "use the link again", chromedp.Navigate(link), chromedp.WaitVisible(css("#login-error:not(:empty)")))
	if msg := get(ctx4, "read the refusal", chromedp.Text(css("#login-error"))); !strings.Contains(msg, "used already") {
		t.Fatalf("a login link used twice: %q", msg)
	}

	do(ctx, "log out", chromedp.Click(css("#logout")), chromedp.WaitVisible(css("#login-view")))
	if sessions := run(t, env, "", "pzh", "--data", hubDir, "web", "sessions"); strings.Count(sessions, "alice") != 1 {
		t.Fatalf("sessions after logging out (the link's is left):\n%s", sessions)
	}
}

// saveArtifact writes a file for a person to look at: into
// $PZONE_ARTIFACTS if set, else the test's artifact directory.
func saveArtifact(t *testing.T, name string, data []byte) {
	if len(data) == 0 {
		return
	}
	dir := os.Getenv("PZONE_ARTIFACTS")
	if dir == "" {
		dir = t.ArtifactDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Logf("artifact %s: %v", name, err)
		return
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Logf("artifact %s: %v", name, err)
		return
	}
	t.Logf("wrote %s", path)
}
