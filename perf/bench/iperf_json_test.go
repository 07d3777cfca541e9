package bench

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The testdata files are real iperf3 3.12 client outputs (-J
// --get-server-output, 2 s) between two namespaces joined by a veth pair.
func readTestdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestParseReport(t *testing.T) {
	tests := []struct {
		file                   string
		protocol               string
		streams                int
		seconds, gbps          float64
		bytes, sent, delivered int64
	}{
		{"iperf3-tcp1.json", "TCP", 1, 2.002532, 15.5330749990512, 3888184968, 0, 0},
		{"iperf3-tcp4.json", "TCP", 4, 2.005081, 26.59170064850248, 6664814216, 0, 0},
		// The server saw sequence numbers up to 324963 with 120053 gaps:
		// 204910 delivered, which is also its 13114240 bytes / 64.
		{"iperf3-udp64.json", "UDP", 1, 2.00073, 0.0524378201956286, 13114240, 325280, 204910},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			r, err := ParseReport(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if r.Version != "iperf 3.12" || r.Protocol != tt.protocol || r.Streams != tt.streams {
				t.Errorf("version %q protocol %q streams %d, want iperf 3.12 %s %d", r.Version, r.Protocol, r.Streams, tt.protocol, tt.streams)
			}
			if !near(r.Seconds, tt.seconds) || !near(r.Gbps, tt.gbps) || r.Bytes != tt.bytes {
				t.Errorf("seconds %v Gbps %v bytes %d, want %v %v %d", r.Seconds, r.Gbps, r.Bytes, tt.seconds, tt.gbps, tt.bytes)
			}
			if r.SentPackets != tt.sent || r.DeliveredPackets != tt.delivered {
				t.Errorf("sent %d delivered %d, want %d %d", r.SentPackets, r.DeliveredPackets, tt.sent, tt.delivered)
			}
		})
	}
}

func TestReportRates(t *testing.T) {
	r, err := ParseReport(readTestdata(t, "iperf3-udp64.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.PPS(), 204910/2.00073; !near(got, want) {
		t.Errorf("PPS = %v, want %v", got, want)
	}
	// Loss counts against what the client sent, tail included.
	if got, want := r.LossPct(), 100*float64(325280-204910)/325280; !near(got, want) {
		t.Errorf("LossPct = %v, want %v", got, want)
	}
	var zero Report
	if zero.PPS() != 0 || zero.LossPct() != 0 {
		t.Errorf("zero report: PPS %v LossPct %v, want 0 0", zero.PPS(), zero.LossPct())
	}
}

func TestParseReportConnectError(t *testing.T) {
	_, err := ParseReport(readTestdata(t, "iperf3-refused.json"))
	if !errors.Is(err, ErrConnect) {
		t.Fatalf("err = %v, want ErrConnect", err)
	}
	if !strings.Contains(err.Error(), "Connection refused") {
		t.Errorf("err = %v, want iperf3's message kept", err)
	}
}

func TestParseReportSkipsTextBeforeJSON(t *testing.T) {
	data := append([]byte("iperf3: warning - something\n"), readTestdata(t, "iperf3-tcp1.json")...)
	if _, err := ParseReport(data); err != nil {
		t.Fatal(err)
	}
}

func TestParseReportErrors(t *testing.T) {
	tests := map[string]string{
		"empty":          "",
		"no JSON":        "iperf3: error - unable to start listener",
		"truncated":      `{"start":{"test_start":{"protocol":"TCP"`,
		"iperf3 error":   `{"error":"error - control socket has closed unexpectedly"}`,
		"TCP without":    `{"start":{"test_start":{"protocol":"TCP"}},"end":{}}`,
		"UDP without":    `{"start":{"test_start":{"protocol":"UDP"}},"end":{"sum_sent":{"packets":10}}}`,
		"unknown proto":  `{"start":{"test_start":{"protocol":"SCTP"}},"end":{}}`,
		"zero seconds":   `{"start":{"test_start":{"protocol":"TCP"}},"end":{"sum_received":{"seconds":0,"bytes":1}}}`,
		"more delivered": `{"start":{"test_start":{"protocol":"UDP"}},"end":{"sum_sent":{"packets":10},"sum_received":{"seconds":1,"packets":12}}}`,
	}
	for name, in := range tests {
		t.Run(name, func(t *testing.T) {
			r, err := ParseReport([]byte(in))
			if err == nil {
				t.Fatalf("ParseReport = %+v, want an error", r)
			}
			if errors.Is(err, ErrConnect) {
				t.Errorf("err = %v: not a connect error", err)
			}
		})
	}
}

func TestParseReportFallbacks(t *testing.T) {
	// Without --get-server-output the client's own end.sum_received
	// carries the server's counts; iperf3 before 3.10 has only end.sum.
	r, err := ParseReport([]byte(`{"start":{"test_start":{"protocol":"UDP","num_streams":1}},
		"end":{"sum":{"packets":100},"sum_received":{"seconds":2,"bytes":3200,"packets":90,"lost_packets":40}}}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.SentPackets != 100 || r.DeliveredPackets != 50 || r.PPS() != 25 || r.LossPct() != 50 {
		t.Errorf("got %+v, want 100 sent, 50 delivered, 25 pps, 50%% loss", r)
	}
	// A sum with no rate has it computed from bytes and seconds.
	if want := 3200 * 8 / 2 / 1e9; !near(r.Gbps, want) {
		t.Errorf("Gbps = %v, want %v", r.Gbps, want)
	}
}
