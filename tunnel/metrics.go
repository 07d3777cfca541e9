package tunnel

import (
	"fmt"
	"io"
	"sort"
)

// writeMetrics renders the counters in the Prometheus text format; a dozen
// lines do not justify a client library.
func writeMetrics(w io.Writer, s Status) {
	ready := 0
	if s.Ready {
		ready = 1
	}
	fmt.Fprintf(w, "# HELP overlayd_build_info Backend and lease of this overlayd.\n# TYPE overlayd_build_info gauge\n")
	fmt.Fprintf(w, "overlayd_build_info{backend=%q,subnet=%q} 1\n", s.Backend, s.Subnet)
	fmt.Fprintf(w, "# HELP overlayd_ready 1 once the lease is held and the subnet file written.\n# TYPE overlayd_ready gauge\noverlayd_ready %d\n", ready)
	fmt.Fprintf(w, "# HELP overlayd_peers Peers in the forwarding table.\n# TYPE overlayd_peers gauge\noverlayd_peers %d\n", len(s.Peers))
	fmt.Fprintf(w, "# HELP overlayd_packets_total Packets forwarded.\n# TYPE overlayd_packets_total counter\n")
	fmt.Fprintf(w, "overlayd_packets_total{dir=\"tx\"} %d\noverlayd_packets_total{dir=\"rx\"} %d\n", s.Stats.TxPackets, s.Stats.RxPackets)
	fmt.Fprintf(w, "# HELP overlayd_bytes_total Inner bytes forwarded.\n# TYPE overlayd_bytes_total counter\n")
	fmt.Fprintf(w, "overlayd_bytes_total{dir=\"tx\"} %d\noverlayd_bytes_total{dir=\"rx\"} %d\n", s.Stats.TxBytes, s.Stats.RxBytes)
	fmt.Fprintf(w, "# HELP overlayd_icmp_sent_total ICMP errors written back into the TUN.\n# TYPE overlayd_icmp_sent_total counter\noverlayd_icmp_sent_total %d\n", s.Stats.ICMPSent)
	fmt.Fprintf(w, "# HELP overlayd_drops_total Packets dropped, by reason.\n# TYPE overlayd_drops_total counter\n")
	reasons := make([]string, 0, len(s.Stats.Drops))
	for r := range s.Stats.Drops {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		fmt.Fprintf(w, "overlayd_drops_total{reason=%q} %d\n", r, s.Stats.Drops[r])
	}
	if len(s.Underlay) > 0 {
		fmt.Fprintf(w, "# HELP overlayd_underlay_total The underlay sockets' own counters, by kind.\n# TYPE overlayd_underlay_total counter\n")
		kinds := make([]string, 0, len(s.Underlay))
		for k := range s.Underlay {
			kinds = append(kinds, k)
		}
		sort.Strings(kinds)
		for _, k := range kinds {
			fmt.Fprintf(w, "overlayd_underlay_total{kind=%q} %d\n", k, s.Underlay[k])
		}
	}
}
