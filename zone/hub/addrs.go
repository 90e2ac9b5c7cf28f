package hub

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	zsync "github.com/pzone/pzone/sync"
	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/localapi"
	"github.com/pzone/pzone/zone/stores"
	"github.com/pzone/pzone/zone/wire"
)

// The zone's public addresses (pzh addr): where devices and friends dial
// the hub. They are kept in pzh.db and published in the zone state's
// zone record, from which devices take them, so a hub can move: add the
// new address, let devices learn it, move, then remove the old one.

// publicAddrs is the zone's public addresses now; the slice is not to be
// changed.
func (h *Hub) publicAddrs() []string { return *h.addrs.Load() }

// badAddr marks an address change refused for what it asks.
type badAddr struct{ error }

// changeAddrs applies change to the stored addresses, then publishes
// them.
func (h *Hub) changeAddrs(change func([]string) ([]string, error)) ([]string, error) {
	next, err := h.store.UpdatePublicAddrs(change)
	if err != nil {
		return nil, err
	}
	h.addrs.Store(&next)
	h.publishZone()
	h.links.announceAddrs()
	h.changes.Bump()
	h.log.Info("public addresses changed", "addrs", next)
	return next, nil
}

// publishZone writes the zone record of the zone state.
func (h *Hub) publishZone() {
	if v, err := json.Marshal(wire.ZoneRecord{Zone: h.zone.Name, ZoneID: h.zone.ID, HubAddrs: h.publicAddrs()}); err == nil {
		h.putState(zsync.BucketUser, wire.UserKeyZone, v)
	}
}

func (h *Hub) addrRoutes(mux *http.ServeMux) {
	answer := func(w http.ResponseWriter, addrs []string, err error) {
		switch {
		case errors.As(err, new(badAddr)):
			localapi.WriteErr(w, http.StatusBadRequest, err)
		case errors.Is(err, ErrAlreadyDone):
			localapi.WriteErr(w, http.StatusConflict, err)
		case errors.Is(err, stores.ErrNotFound):
			localapi.WriteErr(w, http.StatusNotFound, err)
		case err != nil:
			localapi.WriteErr(w, http.StatusInternalServerError, err)
		default:
			localapi.WriteJSON(w, http.StatusOK, api.AddrsView{Addrs: addrs})
		}
	}
	mux.HandleFunc("GET /v1/addrs", func(w http.ResponseWriter, r *http.Request) {
		answer(w, h.publicAddrs(), nil)
	})
	mux.HandleFunc("POST /v1/addrs", func(w http.ResponseWriter, r *http.Request) {
		var req api.AddrRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		addrs, err := h.changeAddrs(func(cur []string) ([]string, error) {
			if err := ValidateHubAddr(req.Addr); err != nil {
				return nil, badAddr{err}
			}
			if slices.Contains(cur, req.Addr) {
				return nil, fmt.Errorf("%w: %s is a public address already", ErrAlreadyDone, req.Addr)
			}
			if len(cur) >= MaxPublicAddrs {
				return nil, badAddr{fmt.Errorf("the zone has %d public addresses, the most an invite token holds: remove one first (pzh addr rm ADDR)", len(cur))}
			}
			return append(cur, req.Addr), nil
		})
		answer(w, addrs, err)
	})
	mux.HandleFunc("POST /v1/addrs/remove", func(w http.ResponseWriter, r *http.Request) {
		var req api.AddrRequest
		if err := localapi.ReadJSON(r, &req); err != nil {
			localapi.WriteErr(w, http.StatusBadRequest, err)
			return
		}
		addrs, err := h.changeAddrs(func(cur []string) ([]string, error) {
			i := slices.Index(cur, req.Addr)
			if i < 0 {
				return nil, fmt.Errorf("%w: %s is not a public address of this zone (pzh addr list)", stores.ErrNotFound, req.Addr)
			}
			if len(cur) == 1 {
				return nil, badAddr{fmt.Errorf("%s is the zone's only public address: add the new one first (pzh addr add ADDR)", req.Addr)}
			}
			return slices.Delete(cur, i, i+1), nil
		})
		answer(w, addrs, err)
	})
}
