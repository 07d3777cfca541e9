package tunnel

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Routine names, as the routines log them: the batch size histogram's
// routine label.
const (
	routineTx = "tun-to-underlay"
	routineRx = "underlay-to-tun"
)

// metricsView is what /metrics shows, read at scrape time: the data path
// only adds to atomics, and the collector turns them into metrics here.
type metricsView struct {
	Status
	Version string
	// PeerTraffic is each peer's counters, by subnet; empty when the
	// kernel forwards (a programmer backend): overlayd sees no packets.
	PeerTraffic []peerTraffic
	// Batches holds the batch size histograms summed over the workers, by
	// routine; empty when the kernel forwards.
	Batches map[string]batchSizes
	// LeaseExpiry is when the lease ends unless renewed; zero if unknown.
	LeaseExpiry time.Time
	Now         time.Time
}

type peerTraffic struct {
	Subnet                     string
	TxPackets, TxBytes, TxDrop uint64
	RxPackets, RxBytes, RxDrop uint64
}

func (e *Engine) metricsView() metricsView {
	v := metricsView{Status: e.status(), Version: e.cfg.Version, Now: time.Now()}
	if l, held := e.mgr.Lease(); held {
		v.LeaseExpiry = l.Expiration
	}
	if e.prog != nil || len(e.workers) == 0 {
		return v
	}
	for _, p := range e.peers.Load().Peers() {
		c := p.Counters
		v.PeerTraffic = append(v.PeerTraffic, peerTraffic{
			Subnet:    p.Subnet.String(),
			TxPackets: c.Tx.Packets.Load(), TxBytes: c.Tx.Bytes.Load(), TxDrop: c.Tx.Drops.Load(),
			RxPackets: c.Rx.Packets.Load(), RxBytes: c.Rx.Bytes.Load(), RxDrop: c.Rx.Drops.Load(),
		})
	}
	var tx, rx batchSizes
	for _, w := range e.workers {
		tx.add(&w.txBatches)
		rx.add(&w.rxBatches)
	}
	v.Batches = map[string]batchSizes{routineTx: tx, routineRx: rx}
	return v
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("overlayd_"+name, help, labels, nil)
}

// The metrics, named as before the client library served them (dashboards
// keep working), plus the per-peer, lease, firewall and batch metrics.
var (
	descBuildInfo   = desc("build_info", "Version, backend and lease of this overlayd.", "version", "backend", "subnet")
	descReady       = desc("ready", "1 once the lease is held and the subnet file written.")
	descPeers       = desc("peers", "Peers in the forwarding table.")
	descPackets     = desc("packets_total", "Packets forwarded.", "dir")
	descBytes       = desc("bytes_total", "Inner bytes forwarded.", "dir")
	descICMP        = desc("icmp_sent_total", "ICMP errors written back into the TUN.")
	descDrops       = desc("drops_total", "Packets dropped, by reason.", "reason")
	descUnderlay    = desc("underlay_total", "The underlay sockets' own counters, by kind.", "kind")
	descPeerPackets = desc("peer_packets_total", "Packets forwarded to (tx) and from (rx) each peer, by its subnet.", "peer", "dir")
	descPeerBytes   = desc("peer_bytes_total", "Inner bytes forwarded to (tx) and from (rx) each peer, by its subnet.", "peer", "dir")
	descPeerDrops   = desc("peer_drops_total", "Packets to (tx) or from (rx) each peer that were dropped, by its subnet.", "peer", "dir")
	descLeaseLeft   = desc("lease_remaining_seconds", "Time until the subnet lease expires unless renewed.")
	descLeaseExpiry = desc("lease_expiry_timestamp_seconds", "When the subnet lease expires unless renewed (Unix time).")
	descFWChecks    = desc("firewall_checks_total", "Checks that overlayd's masquerade and forward rules are in place.")
	descFWRepairs   = desc("firewall_repairs_total", "Times overlayd's masquerade and forward rules had to be put back.")
	descBatchSize   = desc("batch_size", "Packets per batch read, by routine (summed over the workers).", "routine")
	descIdleHeld    = desc("idle_poll_held", "1 while packets flow and idle CPUs are kept polling (--idle-poll).")
	descIdleHolds   = desc("idle_poll_holds_total", "Times packets started flowing and idle CPUs were kept polling (--idle-poll).")
	descBusyCaught  = desc("busy_poll_caught_total", "Reads of a TUN queue or underlay socket that found a packet by polling (--busy-poll).")
	descBusySlept   = desc("busy_poll_slept_total", "Reads of a TUN queue or underlay socket that slept in the kernel, with --busy-poll on.")
)

// collector exports a metricsView, taken at each scrape.
type collector struct{ view func() metricsView }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBuildInfo, descReady, descPeers, descPackets, descBytes, descICMP,
		descDrops, descUnderlay, descPeerPackets, descPeerBytes, descPeerDrops, descLeaseLeft, descLeaseExpiry,
		descFWChecks, descFWRepairs, descBatchSize, descIdleHeld, descIdleHolds, descBusyCaught, descBusySlept} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	v := c.view()
	gauge := func(d *prometheus.Desc, val float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, val, labels...)
	}
	counter := func(d *prometheus.Desc, val uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(val), labels...)
	}
	ready := 0.0
	if v.Ready {
		ready = 1
	}
	gauge(descBuildInfo, 1, v.Version, v.Backend, v.Subnet)
	gauge(descReady, ready)
	gauge(descPeers, float64(len(v.Peers)))
	counter(descPackets, v.Stats.TxPackets, "tx")
	counter(descPackets, v.Stats.RxPackets, "rx")
	counter(descBytes, v.Stats.TxBytes, "tx")
	counter(descBytes, v.Stats.RxBytes, "rx")
	counter(descICMP, v.Stats.ICMPSent)
	for reason, n := range v.Stats.Drops {
		counter(descDrops, n, reason)
	}
	for kind, n := range v.Underlay {
		counter(descUnderlay, n, kind)
	}
	for _, p := range v.PeerTraffic {
		counter(descPeerPackets, p.TxPackets, p.Subnet, "tx")
		counter(descPeerPackets, p.RxPackets, p.Subnet, "rx")
		counter(descPeerBytes, p.TxBytes, p.Subnet, "tx")
		counter(descPeerBytes, p.RxBytes, p.Subnet, "rx")
		counter(descPeerDrops, p.TxDrop, p.Subnet, "tx")
		counter(descPeerDrops, p.RxDrop, p.Subnet, "rx")
	}
	if !v.LeaseExpiry.IsZero() {
		gauge(descLeaseLeft, max(v.LeaseExpiry.Sub(v.Now).Seconds(), 0))
		gauge(descLeaseExpiry, float64(v.LeaseExpiry.UnixMilli())/1000)
	}
	if p := v.IdlePoll; p != nil {
		held := 0.0
		if p.Held {
			held = 1
		}
		gauge(descIdleHeld, held)
		counter(descIdleHolds, p.Holds)
	}
	if p := v.BusyPoll; p != nil {
		counter(descBusyCaught, p.Caught)
		counter(descBusySlept, p.Slept)
	}
	counter(descFWChecks, v.Stats.FirewallChecks)
	counter(descFWRepairs, v.Stats.FirewallRepairs)
	for routine, h := range v.Batches {
		buckets := make(map[float64]uint64, len(batchSizeBounds))
		var cum uint64
		for i, bound := range batchSizeBounds {
			cum += h.counts[i]
			buckets[float64(bound)] = cum
		}
		count := cum + h.counts[len(batchSizeBounds)]
		ch <- prometheus.MustNewConstHistogram(descBatchSize, count, float64(h.sum), buckets, routine)
	}
}

// metricsHandler serves view's metrics, with the Go runtime's and the
// process's, in the Prometheus exposition formats.
func metricsHandler(view func() metricsView) http.Handler {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collector{view},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
