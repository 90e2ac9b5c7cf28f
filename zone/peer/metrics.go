package peer

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pzone/pzone/zone/api"
	"github.com/pzone/pzone/zone/metrics"
)

// The device's Prometheus metrics (pzp run --metrics ADDR; every one is
// listed in docs/METRICS.md), read at each scrape from the device's
// status: what pzp status shows, as numbers.

var (
	descState     = prometheus.NewDesc("pzp_session_state", "1 for the session's current state (online, connecting, renewing, asleep, stopped), 0 for the others.", []string{"state"}, nil)
	descTransport = prometheus.NewDesc("pzp_session_transport", "1 for the live session's transport (quic, tcp), 0 for the other.", []string{"transport"}, nil)
	descRTT       = prometheus.NewDesc("pzp_session_rtt_seconds", "The session's last measured round trip to the hub.", nil, nil)
	descWire      = prometheus.NewDesc("pzp_session_bytes", "Wire bytes of the current session, by direction: sent, received.", []string{"direction"}, nil)
	descCertEnd   = prometheus.NewDesc("pzp_cert_expiry_timestamp_seconds", "When the device's certificate expires (it renews itself at 2/3 of its life).", nil, nil)
	descSeq       = prometheus.NewDesc("pzp_sync_sequence", "The last zone-state sequence number the device holds.", nil, nil)
	descHubSeq    = prometheus.NewDesc("pzp_sync_hub_sequence", "The hub's sequence number, as last heard: the device is behind by the difference.", nil, nil)
	descPending   = prometheus.NewDesc("pzp_sync_pending_edits", "Local edits not yet taken by the hub.", nil, nil)
	descReceived  = prometheus.NewDesc("pzp_sync_received_total", "Zone-state changes received from the hub since pzp run started.", nil, nil)
	descRefused   = prometheus.NewDesc("pzp_sync_refused_total", "Local edits the hub refused (a quota, say) since pzp run started.", nil, nil)
	descInFlight  = prometheus.NewDesc("pzp_calls_in_flight", "Calls, messages and streams in progress, either way.", nil, nil)
	descCalls     = prometheus.NewDesc("pzp_calls_sent_total", "Calls and messages sent to other devices, by path: direct, hub, fallback (through the hub after a direct attempt failed).", []string{"path"}, nil)
	descPings     = prometheus.NewDesc("pzp_wake_pings_total", "What arrived on the wake socket, by verdict: accepted, forged, stale, replayed, malformed.", []string{"verdict"}, nil)
	descSleeps    = prometheus.NewDesc("pzp_sleeps_total", "Times the device went to sleep.", nil, nil)
	descWakes     = prometheus.NewDesc("pzp_wakes_total", "Times it woke, by cause: ping, local (an app, an edit, renewal, check-in).", []string{"cause"}, nil)
	descEnvelopes = prometheus.NewDesc("pzp_envelopes_total", "Signed calls and answers from friend zones, by verdict: accepted, forged, stale, replayed, unknown.", []string{"verdict"}, nil)
)

var peerStates = []string{"online", "connecting", "renewing", "asleep", "stopped"}

// registerMetrics adds the device's collector to reg.
func (p *Peer) registerMetrics(reg *prometheus.Registry) {
	var f metrics.Funcs
	f.Add(func(ch chan<- prometheus.Metric) {
		st := p.status(0)
		for _, s := range peerStates {
			metrics.Gauge(ch, descState, b2f(st.State == s), s)
		}
		for _, t := range []string{"quic", "tcp"} {
			metrics.Gauge(ch, descTransport, b2f(st.State == "online" && st.Transport == t), t)
		}
		if st.RTTMs != nil {
			metrics.Gauge(ch, descRTT, *st.RTTMs/1000)
		}
		metrics.Gauge(ch, descWire, float64(st.BytesSent), "sent")
		metrics.Gauge(ch, descWire, float64(st.BytesReceived), "received")
		metrics.Gauge(ch, descCertEnd, float64(st.CertExpires.Unix()))
		if s := st.Sync; s != nil {
			metrics.Gauge(ch, descSeq, float64(s.LastSeq))
			metrics.Gauge(ch, descHubSeq, float64(s.HubSeq))
			metrics.Gauge(ch, descPending, float64(s.Pending))
			metrics.Counter(ch, descReceived, float64(s.Received))
			metrics.Counter(ch, descRefused, float64(s.Refused))
		}
		metrics.Gauge(ch, descInFlight, float64(p.inflight.Load()))
		if d := st.Direct; d != nil {
			metrics.Counter(ch, descCalls, float64(d.CallsDirect), "direct")
			metrics.Counter(ch, descCalls, float64(d.CallsHub-d.Fallbacks), "hub")
			metrics.Counter(ch, descCalls, float64(d.Fallbacks), "fallback")
		}
		// A device that never sleeps has slept and woken 0 times.
		w := st.Wake
		if w == nil {
			w = &api.PeerWakeStatus{}
		}
		for v, n := range map[string]uint64{"accepted": w.Pings.Accepted, "forged": w.Pings.Forged, "stale": w.Pings.Stale,
			"replayed": w.Pings.Replayed, "malformed": w.Pings.Malformed} {
			metrics.Counter(ch, descPings, float64(n), v)
		}
		metrics.Counter(ch, descSleeps, float64(w.Sleeps))
		metrics.Counter(ch, descWakes, float64(w.PingWakes), "ping")
		metrics.Counter(ch, descWakes, float64(w.LocalWakes), "local")
		e := st.Envelopes
		for v, n := range map[string]uint64{"accepted": e.Accepted, "forged": e.Forged, "stale": e.Stale, "replayed": e.Replayed, "unknown": e.Unknown} {
			metrics.Counter(ch, descEnvelopes, float64(n), v)
		}
	}, descState, descTransport, descRTT, descWire, descCertEnd, descSeq, descHubSeq, descPending, descReceived, descRefused,
		descInFlight, descCalls, descPings, descSleeps, descWakes, descEnvelopes)
	reg.MustRegister(&f)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
