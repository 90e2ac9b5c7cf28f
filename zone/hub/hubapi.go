package hub

import (
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/pzone/pzone/transport"
	"github.com/pzone/pzone/zone/services"
	"github.com/pzone/pzone/zone/stores"

	"github.com/pzone/pzone/certs"
	"github.com/pzone/pzone/pairing"
	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/web"
	"github.com/pzone/pzone/zone/wire"
)

func inviteView(inv *pairing.Invite, now time.Time) api.InviteView {
	state := "open"
	switch inv.Usable(now) {
	case pairing.ErrInviteCancelled:
		state = "cancelled"
	case pairing.ErrInviteUsedUp:
		state = "used"
	case pairing.ErrInviteExpired:
		state = "expired"
	case pairing.ErrInviteBurned:
		state = "burned"
	}
	return api.InviteView{ID: inv.ID, Device: inv.Device, State: state, Uses: inv.Uses, UsesLeft: inv.UsesLeft,
		Created: inv.Created, Expires: inv.Expires, CertLifetime: inv.CertLifetime.String(), Devices: inv.Devices,
		CodeNumber: inv.CodeNumber, WrongCodes: inv.WrongCodes}
}

func (h *Hub) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, h.status(localapi.LongPoll(r, &h.changes)))
	})
	mux.HandleFunc("GET /v1/devices", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, h.devicesView(localapi.LongPoll(r, &h.changes)))
	})
	mux.HandleFunc("POST /v1/devices/{name}/revoke", func(w http.ResponseWriter, r *http.Request) {
		name := r.PathValue("name")
		online := h.reg.session(name) != nil
		rec, err := h.revoke(name, "revoked by the hub operator", wire.ReasonRevoked)
		if err != nil {
			localapi.WriteErr(w, localapi.ErrStatus(err, []error{ErrNoDevice}, []error{ErrAlreadyDone}), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, api.RevokeResponse{Device: name, RevokedAt: rec.RevokedAt, WasOnline: online})
	})
	mux.HandleFunc("POST /v1/devices/{name}/wake", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		var at time.Time
		if s := q.Get("at"); s != "" {
			var err error
			if at, err = time.Parse(time.RFC3339Nano, s); err != nil {
				localapi.WriteErr(w, http.StatusBadRequest, fmt.Errorf("at: %w (want RFC 3339)", err))
				return
			}
		}
		res, err := h.wakes.wakeNow(r.PathValue("name"), q.Get("print") == "1", at)
		if err != nil {
			localapi.WriteErr(w, localapi.ErrStatus(err, []error{stores.ErrNotFound}, []error{errNoWake}), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, res)
	})
	mux.HandleFunc("GET /v1/invites", func(w http.ResponseWriter, r *http.Request) {
		now := h.cfg.Now()
		invs, err := h.store.Invites(now)
		if err != nil {
			localapi.WriteErr(w, http.StatusInternalServerError, err)
			return
		}
		out := []api.InviteView{}
		for _, inv := range invs {
			out = append(out, inviteView(inv, now))
		}
		localapi.WriteJSON(w, http.StatusOK, out)
	})
	mux.HandleFunc("POST /v1/invites", func(w http.ResponseWriter, r *http.Request) {
		var req api.InviteRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		v, err := h.createInvite(req)
		if err != nil {
			status := http.StatusInternalServerError
			if errors.Is(err, errBadInvite) {
				status = http.StatusBadRequest
			}
			localapi.WriteErr(w, status, err)
			return
		}
		localapi.WriteJSON(w, http.StatusCreated, v)
	})
	mux.HandleFunc("DELETE /v1/invites/{id}", func(w http.ResponseWriter, r *http.Request) {
		id, err := pairing.NormalizeInviteID(r.PathValue("id"))
		if err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		inv, err := h.store.CancelInvite(id)
		if err != nil {
			localapi.WriteErr(w, localapi.ErrStatus(err, []error{ErrNoInvite}, []error{ErrAlreadyDone}), err)
			return
		}
		h.log.Info("invite cancelled", "invite", id)
		localapi.WriteJSON(w, http.StatusOK, inviteView(inv, h.cfg.Now()))
	})
	localapi.RegisterDebug(mux, func() int {
		_, online := h.reg.counts()
		return online
	})
	localapi.DataRoutes(mux, func() *zsync.Store { return h.state }, zsync.HubNode)
	h.tokens.bindingRoutes(mux)
	h.tokens.routes(mux)
	h.policy.routes(mux)
	h.addrRoutes(mux)
	h.backupRoutes(mux)
	h.friends.routes(mux)
	services.HostRoutes(mux, h.services, hostedApp, func(app string, info api.ServiceInfo) error {
		return services.Publish(h.state, zsync.HubNode, app, info)
	}, nil, h.log)
	web.AdminRoutes(mux, h.mgmt, func() string {
		if u := h.webURL.Load(); u != nil {
			return *u
		}
		return ""
	})
	mux.HandleFunc("/", localapi.NotFound)
	return mux
}

// errBadInvite marks invite requests refused for what they ask.
var errBadInvite = errors.New("bad invite request")

func badInvite(err error) error { return fmt.Errorf("%w: %w", errBadInvite, err) }

func parseDurationField(name, s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%s %q: not a duration (examples: 15m, 24h, 2160h)", name, s)
	}
	return d, nil
}

func (h *Hub) createInvite(req api.InviteRequest) (*api.InviteView, error) {
	if err := certs.ValidateName("device", req.Device); err != nil {
		return nil, badInvite(err)
	}
	if req.Uses > 1 && len(req.Device)+len(fmt.Sprintf("-%d", req.Uses)) > 63 {
		return nil, badInvite(fmt.Errorf("device name %q is too long for %d uses: devices get names up to %s-%d, at most 63 characters", req.Device, req.Uses, req.Device, req.Uses))
	}
	if req.Device == certs.HubDevice {
		return nil, badInvite(fmt.Errorf("device name %q is reserved for the hub itself", certs.HubDevice))
	}
	ttl, err := parseDurationField("ttl", req.TTL)
	if err != nil {
		return nil, badInvite(err)
	}
	life, err := parseDurationField("cert lifetime", req.CertLifetime)
	if err != nil {
		return nil, badInvite(err)
	}
	if h.store.ActiveDevice(req.Device) {
		return nil, badInvite(fmt.Errorf("device %q is already paired; revoke it first (pzh revoke %s) or choose another name", req.Device, req.Device))
	}
	now := h.cfg.Now()
	tmpl := pairing.Template{Device: req.Device, TTL: ttl, Uses: req.Uses, CertLifetime: life}.WithDefaults()
	if err := tmpl.Validate(); err != nil {
		return nil, badInvite(err)
	}
	inv, secret, err := pairing.NewInvite(tmpl, now)
	if err != nil {
		return nil, err
	}
	var code pairing.Code
	if req.Code {
		code.Secret = pairing.NewCodeSecret()
		inv.CodeSecret = code.Secret[:]
		if code.Number, err = h.store.AddCodeInvite(bucketInvites, inv, now, h.holdCode(transport.ALPNPairCode, inv)); err != nil {
			return nil, err
		}
	} else if err := h.store.AddInvite(inv); err != nil {
		return nil, err
	}
	tok := &pairing.Token{Addrs: h.publicAddrs(), Zone: h.zone.ID, InviteID: inv.ID, Secret: secret}
	v := inviteView(inv, now)
	v.Token = tok.String()
	if req.Code {
		v.Code = code.String()
	}
	h.log.Info("invite created", "invite", inv.ID, "device", inv.Device, "uses", inv.Uses, "expires", inv.Expires)
	return &v, nil
}

// hostedApp is the app a service on the hub's host registers as: pzh.sock
// is the operator's own (0600), so it may name any (?app=; the service's
// name when it gives none). On a call's reply or a stream's accept, which
// name no service, it is "": the operator, who may answer any.
func hostedApp(r *http.Request) (string, error) {
	app := r.URL.Query().Get("app")
	if app == "" {
		app = r.PathValue("service")
	}
	return app, nil
}
