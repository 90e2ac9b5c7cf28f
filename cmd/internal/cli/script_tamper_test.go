package cli

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/spf13/pflag"

	"github.com/pzone/pzone/zone/hub"
	"github.com/pzone/pzone/zone/wire"
)

// A hub that misbehaves on purpose, for the scripts that show devices
// catch a hub altering, replaying or answering what friend zones send
// through it (testdata/script/federation.txtar). It exists only in the
// test binary, as its pzh serve --test-tamper MODE; the shipped pzh has no
// such flag.

// Tamper modes.
const (
	tamperAlter  = "alter"  // change the calling app's name after the device signed the call
	tamperReplay = "replay" // deliver each call twice
	tamperAnswer = "answer" // answer a call itself, as if it kept it, with a result of its own
)

// tamperExtension is pzh serve's --test-tamper flag in the test binary.
func tamperExtension(f *pflag.FlagSet) func(*hub.Config) error {
	mode := f.String("test-tamper", "", "misbehave with calls from friend zones (alter, replay or answer)")
	return func(cfg *hub.Config) error {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		switch *mode {
		case "":
			return nil
		case tamperAlter, tamperReplay, tamperAnswer:
			cfg.FriendCallHook = func(c *hub.FriendCall) bool { return tamper(*mode, c, log) }
			return nil
		}
		return fmt.Errorf("test tamper mode %q: use %s, %s or %s", *mode, tamperAlter, tamperReplay, tamperAnswer)
	}
}

// tamper misbehaves with one call from a friend zone, and reports whether
// it answered the call itself; if not, the hub relays it (altered).
func tamper(mode string, c *hub.FriendCall, log *slog.Logger) bool {
	switch mode {
	case tamperAlter:
		log.Warn("test tamper: altering a call from a friend zone", "id", c.Header.ID)
		c.Header.FromApp += "x"
		return false
	case tamperAnswer:
		log.Warn("test tamper: answering a call from a friend zone with a forged result", "id", c.Header.ID)
		if _, err := c.ReadBody(); err != nil {
			c.Reset()
			return true
		}
		c.Answer(&wire.CallReply{Queued: true, ExpiresMs: time.Now().Add(time.Hour).UnixMilli()}, []byte(`"forged by the hub"`))
		return true
	case tamperReplay:
		body, err := c.ReadBody()
		if err != nil {
			c.Refuse(wire.CallBadRequest, "request body: "+err.Error())
			return true
		}
		rep, res, err := c.Deliver(body)
		if err != nil {
			c.Refuse(wire.CallOffline, err.Error())
			return true
		}
		c.Answer(rep, res)
		if rep, _, err = c.Deliver(body); err == nil {
			log.Warn("test tamper: replayed a call from a friend zone", "id", c.Header.ID, "status", rep.Status, "answer", rep.Message)
		}
		return true
	}
	return false
}
