package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrConnect is the iperf3 client failing to reach its server; the bench
// retries it, since a freshly started server may not be listening yet.
var ErrConnect = errors.New("iperf3 could not connect to the server")

// Report is what one iperf3 client run measured, read from its -J output.
// Every number is the receiver's, except SentPackets.
type Report struct {
	Version  string  // "iperf 3.12"
	Protocol string  // "TCP" or "UDP"
	Streams  int     // parallel streams (-P)
	Seconds  float64 // how long the receiver measured
	Bytes    int64   // bytes delivered to the receiver
	Gbps     float64 // the receiver's rate, 10^9 bit/s

	// UDP only.
	SentPackets      int64 // datagrams the client sent
	DeliveredPackets int64 // datagrams the server received
	// ReceiverDrops is not iperf3's: the datagrams that reached the
	// server's host but that its kernel dropped because the server's
	// socket buffer was full (Udp RcvbufErrors in its namespace), counted
	// by the bench around the run. The rest of the loss happened on the
	// way.
	ReceiverDrops int64
}

// PPS is the delivered UDP packet rate, per second.
func (r Report) PPS() float64 {
	if r.Seconds <= 0 {
		return 0
	}
	return float64(r.DeliveredPackets) / r.Seconds
}

// LossPct is the share of sent UDP datagrams that never arrived, in percent.
// It counts the tail too: datagrams lost after the last one the server saw.
func (r Report) LossPct() float64 {
	if r.SentPackets <= 0 {
		return 0
	}
	return 100 * float64(r.SentPackets-r.DeliveredPackets) / float64(r.SentPackets)
}

// ReceiverLossPct is the share of sent UDP datagrams that the receiving
// socket dropped, in percent: part of LossPct.
func (r Report) ReceiverLossPct() float64 {
	if r.SentPackets <= 0 {
		return 0
	}
	return 100 * float64(r.ReceiverDrops) / float64(r.SentPackets)
}

// iperfOutput is the part of iperf3's -J output the bench reads.
type iperfOutput struct {
	Start struct {
		Version   string `json:"version"`
		TestStart struct {
			Protocol   string `json:"protocol"`
			NumStreams int    `json:"num_streams"`
		} `json:"test_start"`
	} `json:"start"`
	End struct {
		Sum         *iperfSum `json:"sum"`
		SumSent     *iperfSum `json:"sum_sent"`
		SumReceived *iperfSum `json:"sum_received"`
	} `json:"end"`
	Error string `json:"error"`
	// The server's own -J output, with --get-server-output.
	Server *iperfOutput `json:"server_output_json"`
}

type iperfSum struct {
	Seconds       float64 `json:"seconds"`
	Bytes         int64   `json:"bytes"`
	BitsPerSecond float64 `json:"bits_per_second"`
	Packets       int64   `json:"packets"`
	LostPackets   int64   `json:"lost_packets"`
}

// ParseReport reads the -J output of an iperf3 client run with
// --get-server-output. Text before the JSON object (a warning on the same
// stream) is skipped. An iperf3 error is returned as an error, wrapping
// [ErrConnect] when the server could not be reached.
//
// TCP throughput is the receiver's (end.sum_received). For UDP, the
// delivered count is the server's: its highest sequence number seen minus
// the gaps (packets - lost_packets), which iperf3 3.12 also reports as
// sum_received.bytes / datagram size; the sent count is the client's
// (end.sum_sent, or end.sum in iperf3 before 3.10).
func ParseReport(data []byte) (Report, error) {
	start := bytes.IndexByte(data, '{')
	if start < 0 {
		return Report{}, fmt.Errorf("iperf3 output holds no JSON: %q", clip(data, 200))
	}
	var out iperfOutput
	if err := json.NewDecoder(bytes.NewReader(data[start:])).Decode(&out); err != nil {
		return Report{}, fmt.Errorf("iperf3 JSON: %w", err)
	}
	if out.Error != "" {
		if strings.Contains(out.Error, "unable to connect") {
			return Report{}, fmt.Errorf("%w: %s", ErrConnect, out.Error)
		}
		return Report{}, fmt.Errorf("iperf3: %s", out.Error)
	}
	r := Report{
		Version:  out.Start.Version,
		Protocol: out.Start.TestStart.Protocol,
		Streams:  out.Start.TestStart.NumStreams,
	}
	switch r.Protocol {
	case "TCP":
		recv := out.End.SumReceived
		if recv == nil {
			return Report{}, errors.New("iperf3 JSON: TCP run without end.sum_received")
		}
		r.setReceived(recv)
	case "UDP":
		sent := first(out.End.SumSent, out.End.Sum)
		var recv *iperfSum
		if out.Server != nil {
			recv = first(out.Server.End.SumReceived, out.Server.End.Sum)
		}
		recv = first(recv, out.End.SumReceived)
		if sent == nil || recv == nil {
			return Report{}, errors.New("iperf3 JSON: UDP run without the sent and received sums")
		}
		r.setReceived(recv)
		r.SentPackets = sent.Packets
		r.DeliveredPackets = recv.Packets - recv.LostPackets
		if r.DeliveredPackets < 0 || r.DeliveredPackets > r.SentPackets {
			return Report{}, fmt.Errorf("iperf3 JSON: %d datagrams delivered of %d sent: inconsistent", r.DeliveredPackets, r.SentPackets)
		}
	default:
		return Report{}, fmt.Errorf("iperf3 JSON: protocol %q, want TCP or UDP", r.Protocol)
	}
	if r.Seconds <= 0 {
		return Report{}, fmt.Errorf("iperf3 JSON: receiver measured for %g s", r.Seconds)
	}
	return r, nil
}

func (r *Report) setReceived(s *iperfSum) {
	r.Seconds, r.Bytes = s.Seconds, s.Bytes
	r.Gbps = s.BitsPerSecond / 1e9
	if r.Gbps == 0 && s.Seconds > 0 { // iperf3 leaves it 0 in some server sums
		r.Gbps = float64(s.Bytes) * 8 / s.Seconds / 1e9
	}
}

// first is the first non-nil sum.
func first(sums ...*iperfSum) *iperfSum {
	for _, s := range sums {
		if s != nil {
			return s
		}
	}
	return nil
}

// clip shortens b for an error message.
func clip(b []byte, n int) []byte {
	b = bytes.TrimSpace(b)
	if len(b) > n {
		return b[:n]
	}
	return b
}
