package hub

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pzone/pzone/zone/metrics"
	"github.com/pzone/pzone/zone/wire"
)

// The hub's Prometheus metrics (pzh serve --metrics ADDR; every one is
// listed in docs/METRICS.md). States are read at each scrape from what
// the hub keeps anyway; events are counted where they happen. No label
// names a device, a friend or an operator.

// hubCounters are the events counted as they happen.
type hubCounters struct {
	admissions *prometheus.CounterVec // result: admitted, renew_only, or the refusal's reason
	closes     *prometheus.CounterVec // reason a session ended
	refusals   *prometheus.CounterVec // status: calls the hub itself refused
	routed     *prometheus.CounterVec // kind: calls, messages and streams routed
	relayed    *prometheus.CounterVec // direction: bytes relayed (to the serving side, back)
	// request and response are relayed's two, and routedKind routed's by
	// kind, for the call path to add to without a label lookup per call.
	request, response prometheus.Counter
	routedKind        map[wire.CallKind]prometheus.Counter
	// routedAll is routed's sum, for pzh status.
	routedAll atomic.Uint64
}

// routedCall counts a call, message or stream taken to route (its kind
// checked when its header was read).
func (c *hubCounters) routedCall(k wire.CallKind) {
	c.routedAll.Add(1)
	c.routedKind[k].Inc()
}

func newHubCounters() *hubCounters {
	c := &hubCounters{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pzh_session_admissions_total",
			Help: "Device sessions that completed their handshake, by result: admitted, renew_only, or the reason they were refused."}, []string{"result"}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pzh_sessions_closed_total",
			Help: "Device sessions that ended, by reason."}, []string{"reason"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pzh_call_refusals_total",
			Help: "Calls, messages and streams the hub answered itself with a failure, by status."}, []string{"status"}),
		routed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pzh_calls_routed_total",
			Help: "Calls, messages and streams the hub took to route, by kind (refused ones included)."}, []string{"kind"}),
		relayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pzh_relayed_bytes_total",
			Help: "Bytes of calls and streams relayed between devices and to friend zones, by direction: request (towards the service) or response."}, []string{"direction"}),
	}
	c.request, c.response = c.relayed.WithLabelValues("request"), c.relayed.WithLabelValues("response")
	c.routedKind = map[wire.CallKind]prometheus.Counter{}
	for _, k := range []wire.CallKind{wire.CallRequest, wire.CallMessage, wire.CallStream} {
		c.routedKind[k] = c.routed.WithLabelValues(kindLabel(k))
	}
	return c
}

func kindLabel(k wire.CallKind) string {
	switch k {
	case wire.CallRequest:
		return "call"
	case wire.CallMessage:
		return "message"
	default: // wire.CallStream, the only other kind a header may have
		return "stream"
	}
}

var (
	descDevices     = prometheus.NewDesc("pzh_devices", "Paired devices by state: online, asleep, offline, revoked.", []string{"state"}, nil)
	descSessions    = prometheus.NewDesc("pzh_sessions", "Live device sessions by transport (renewal-only ones not counted).", []string{"transport"}, nil)
	descQueued      = prometheus.NewDesc("pzh_queued_messages", "Messages kept for devices that are asleep or offline.", nil, nil)
	descQueuedBytes = prometheus.NewDesc("pzh_queued_bytes", "Bytes of the messages kept for devices.", nil, nil)
	descWakePings   = prometheus.NewDesc("pzh_wake_pings_total", "Wake pings since the hub started, by result: sent, or limited (held back by the rate cap).", []string{"result"}, nil)
	descSyncSeq     = prometheus.NewDesc("pzh_sync_sequence", "The zone state's last sequence number: each accepted edit adds one, so its rate is the edits per second.", nil, nil)
	descSyncBytes   = prometheus.NewDesc("pzh_sync_bytes", "Bytes of keys and values the zone state holds.", nil, nil)
	descFriends     = prometheus.NewDesc("pzh_friends", "Friend zones.", nil, nil)
	descLinks       = prometheus.NewDesc("pzh_friend_links_up", "Friend zones whose hub-to-hub link is up.", nil, nil)
	descFriendQueue = prometheus.NewDesc("pzh_friend_queued_messages", "Messages kept for friend zones until their link is back.", nil, nil)
	descWebSessions = prometheus.NewDesc("pzh_web_sessions", "Live web sessions by state: partial, full.", []string{"state"}, nil)
	descWebLogins   = prometheus.NewDesc("pzh_web_logins_total", "Web login steps by result: password_ok, password_bad, mfa_ok, mfa_bad, link_ok, link_bad, backoff.", []string{"result"}, nil)
)

// registerMetrics adds the hub's collectors to reg.
func (h *Hub) registerMetrics(reg *prometheus.Registry) {
	c := h.counters
	reg.MustRegister(c.admissions, c.closes, c.refusals, c.routed, c.relayed)
	var f metrics.Funcs
	f.Add(func(ch chan<- prometheus.Metric) {
		view := h.devicesView(0)
		states := map[string]float64{"online": 0, "asleep": 0, "offline": 0, "revoked": 0}
		transports := map[string]float64{}
		for _, k := range h.cfg.Transports {
			transports[string(k)] = 0
		}
		var queued, queuedBytes float64
		for _, d := range view.Devices {
			states[d.State]++
			if d.State == "online" && d.Transport != "" {
				transports[d.Transport]++
			}
			queued += float64(d.Queue)
			queuedBytes += float64(d.QueueBytes)
		}
		for s, n := range states {
			metrics.Gauge(ch, descDevices, n, s)
		}
		for t, n := range transports {
			metrics.Gauge(ch, descSessions, n, t)
		}
		metrics.Gauge(ch, descQueued, queued)
		metrics.Gauge(ch, descQueuedBytes, queuedBytes)
		metrics.Counter(ch, descWakePings, float64(h.wakes.sent.Load()), "sent")
		metrics.Counter(ch, descWakePings, float64(h.wakes.limited.Load()), "limited")
	}, descDevices, descSessions, descQueued, descQueuedBytes, descWakePings)
	f.Add(func(ch chan<- prometheus.Metric) {
		metrics.Gauge(ch, descSyncSeq, float64(h.state.Head()))
		metrics.Gauge(ch, descSyncBytes, float64(h.state.Usage().Bytes))
	}, descSyncSeq, descSyncBytes)
	f.Add(func(ch chan<- prometheus.Metric) {
		metrics.Gauge(ch, descFriends, float64(h.friends.count()))
		metrics.Gauge(ch, descLinks, float64(h.links.linked()))
		var q float64
		for _, fv := range h.friends.views(0).Friends {
			q += float64(fv.Queue)
		}
		metrics.Gauge(ch, descFriendQueue, q)
	}, descFriends, descLinks, descFriendQueue)
	f.Add(func(ch chan<- prometheus.Metric) {
		st := h.mgmt.Stats()
		metrics.Gauge(ch, descWebSessions, float64(st.Partial), "partial")
		metrics.Gauge(ch, descWebSessions, float64(st.Full), "full")
		for r, n := range st.Logins {
			metrics.Counter(ch, descWebLogins, float64(n), r)
		}
	}, descWebSessions, descWebLogins)
	reg.MustRegister(&f)
}
