package provider

import (
	"errors"
	"fmt"
	"net/http"
	"os"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/wire"
)

// The provider's admin socket (pzh-provider.sock in its data directory):
// the zone set. Each zone's own admin socket, in its directory, manages
// that zone alone (pzh --data DIR/zones/NAME ...).
func (p *Provider) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/status", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, p.status())
	})
	mux.HandleFunc("GET /v1/zones", func(w http.ResponseWriter, r *http.Request) {
		localapi.WriteJSON(w, http.StatusOK, p.list())
	})
	mux.HandleFunc("POST /v1/zones", func(w http.ResponseWriter, r *http.Request) {
		if !p.standbyRefuse(w) {
			return
		}
		var req api.ZoneAddRequest
		if !readJSON(w, r, &req) {
			return
		}
		v, err := p.addZone(req)
		if err != nil {
			localapi.WriteErr(w, errStatus(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusCreated, v)
	})
	mux.HandleFunc("DELETE /v1/zones/{zone}", func(w http.ResponseWriter, r *http.Request) {
		if !p.standbyRefuse(w) {
			return
		}
		v, err := p.removeZone(r.PathValue("zone"))
		if err != nil {
			localapi.WriteErr(w, errStatus(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
	mux.HandleFunc("PUT /v1/zones/{zone}/limits", func(w http.ResponseWriter, r *http.Request) {
		if !p.standbyRefuse(w) {
			return
		}
		var req api.ZoneLimitsRequest
		if !readJSON(w, r, &req) {
			return
		}
		v, err := p.setLimits(r.PathValue("zone"), req)
		if err != nil {
			localapi.WriteErr(w, errStatus(err), err)
			return
		}
		localapi.WriteJSON(w, http.StatusOK, v)
	})
	localapi.RegisterDebug(mux, p.sessions)
	mux.HandleFunc("/", localapi.NotFound)
	return mux
}

// status is GET /v1/status.
func (p *Provider) status() api.ProviderStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	st := api.ProviderStatus{PublicAddrs: p.cat.set.PublicAddrs, Started: p.started, PID: os.Getpid(), Software: wire.SoftwareVersion}
	if p.router != nil {
		st.Listen = p.router.Addr().String()
	}
	for _, k := range p.cfg.Transports {
		st.Transports = append(st.Transports, string(k))
	}
	for _, z := range p.zones {
		st.Zones++
		if s, _ := z.view(); s == "serving" {
			st.Serving++
		}
	}
	if n := p.node; n != nil {
		n.mu.Lock()
		st.Node, st.Role, st.RoleSince, st.ActiveNode = n.name, n.role, n.since, n.active
		n.mu.Unlock()
		st.NodeAddrs = n.own
		if st.Role != "active" {
			st.Listen, st.Transports = "", nil
		}
	}
	return st
}

// standbyRefuse answers a change of the zone set on a standby node,
// and reports whether the request may go on.
func (p *Provider) standbyRefuse(w http.ResponseWriter) bool {
	n := p.node
	if n == nil {
		return true
	}
	n.mu.Lock()
	role, active := n.role, n.active
	n.mu.Unlock()
	if role == "active" {
		return true
	}
	if active == "" {
		active = "another node"
	} else {
		active = "node " + active
	}
	localapi.WriteErr(w, http.StatusServiceUnavailable, fmt.Errorf("this node (%s) is on standby; %s serves the cluster: run the command on it", n.name, active))
	return false
}

// readJSON reads a request's body as the other sockets do, answering
// 400 when it cannot.
func readJSON(w http.ResponseWriter, r *http.Request, v any) bool {
	if err := localapi.ReadJSON(r, v); err != nil {
		localapi.WriteErr(w, http.StatusBadRequest, err)
		return false
	}
	return true
}

func errStatus(err error) int {
	switch {
	case errors.Is(err, errNoZone):
		return http.StatusNotFound
	case errors.Is(err, errZoneExists):
		return http.StatusConflict
	case errors.Is(err, errBadZoneRequest):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}
