package peer

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/pzone/pzone/zone/appid"
	"github.com/pzone/pzone/zone/localapi"
)

// Who an application is, on the local API: every request is checked here
// before any route sees it, and carries its app in its context
// (appid.From). See docs/PROTOCOL.md, "App credentials".

// authenticate wraps the local API: a request presenting a credential
// (Authorization: Bearer) is that app's or refused; one presenting none is
// app anonymous, or refused under Config.RequireAppAuth.
func (p *Peer) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		app, err := p.identify(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", `Bearer realm="pzp"`)
			localapi.WriteErr(w, http.StatusUnauthorized, err)
			return
		}
		if c := localapi.ConnOf(r.Context()); c != nil && c.FirstAs(app) {
			p.log.Info("app connected", "app", app, "pid", c.PID, "uid", c.UID)
		}
		ctx := appid.WithRecheck(appid.WithApp(r.Context(), app), func() error {
			now, err := p.identify(r)
			if err == nil && now != app {
				err = fmt.Errorf("the credential is app %q's now", now)
			}
			return err
		})
		next.ServeHTTP(w, r.WithContext(ctx))
	})
}

func (p *Peer) identify(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		if p.cfg.RequireAppAuth {
			return "", errors.New("this device takes only registered apps (pzp run --require-app-auth): register the app with pzp app add NAME and present the credential it prints (Authorization: Bearer CREDENTIAL)")
		}
		return appid.Anonymous, nil
	}
	cred, ok := strings.CutPrefix(h, "Bearer ")
	if !ok {
		return "", errors.New("the Authorization header must be: Bearer CREDENTIAL (the credential pzp app add printed)")
	}
	app, err := p.apps.Verify(cred)
	if err != nil {
		return "", err
	}
	return app, nil
}

// cliOnly refuses a request from any app but the device's own CLI: what
// changes the device itself (unpairing it, its profiles).
func cliOnly(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if app := appid.From(r.Context()); app != appid.CLI {
			localapi.WriteErr(w, http.StatusForbidden, fmt.Errorf("only the device's own CLI (pzp) may do this; app %q may not", app))
			return
		}
		next(w, r)
	}
}

// claimedApp checks an app name a request gives (the older ?app= or
// "app" field) against who it is: it may repeat its own name, nothing else.
func claimedApp(r *http.Request, claimed string) error {
	app := appid.From(r.Context())
	if claimed == "" || claimed == app {
		return nil
	}
	return fmt.Errorf("this request is app %q and cannot act as %q: an app's name comes from its credential (pzp app add %s prints one)", app, claimed, claimed)
}
