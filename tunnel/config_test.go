package tunnel

import (
	"strings"
	"testing"
	"time"
)

func validConfig() Config {
	return Config{
		SubnetFile:  "/run/flannel/subnet.env",
		RenewMargin: time.Hour,
		HealthzIP:   "0.0.0.0",
		TunName:     "flannel0",
		Queues:      1,
	}
}

func TestConfigValidateNamesTheFlag(t *testing.T) {
	if err := (&Config{}).Validate(); err == nil {
		t.Fatal("empty config accepted")
	}
	ok := validConfig()
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		flag   string
	}{
		{"bad public ip", func(c *Config) { c.PublicIP = "300.1.1.1" }, "--public-ip"},
		{"ipv6 public ip", func(c *Config) { c.PublicIP = "2001:db8::1" }, "--public-ip"},
		{"renew margin too small", func(c *Config) { c.RenewMargin = 0 }, "--subnet-lease-renew-margin"},
		{"renew margin too large", func(c *Config) { c.RenewMargin = 1440 * time.Minute }, "--subnet-lease-renew-margin"},
		{"healthz port", func(c *Config) { c.HealthzPort = 70000 }, "--healthz-port"},
		{"healthz ip", func(c *Config) { c.HealthzPort = 8080; c.HealthzIP = "nowhere" }, "--healthz-ip"},
		{"long tun name", func(c *Config) { c.TunName = "averyveryverylongname" }, "--tun-name"},
		{"tun name an iptables wildcard", func(c *Config) { c.TunName = "ovl+" }, "--tun-name"},
		{"tun name a kernel template", func(c *Config) { c.TunName = "tun%d" }, "--tun-name"},
		{"tun name with a quote", func(c *Config) { c.TunName = `a"b` }, "--tun-name"},
		{"tun name with a space", func(c *Config) { c.TunName = "a b" }, "--tun-name"},
		{"no queues", func(c *Config) { c.Queues = 0 }, "--queues"},
		{"unknown underlay", func(c *Config) { c.UnderlayKind = "dpdk" }, "--underlay"},
		{"unknown steering", func(c *Config) { c.Steering = "rss" }, "--steering"},
		{"negative idle poll", func(c *Config) { c.IdlePoll = -time.Second }, "--idle-poll"},
		{"idle poll too short", func(c *Config) { c.IdlePoll = time.Millisecond }, "at least 10ms"},
		{"negative busy poll", func(c *Config) { c.BusyPoll = -time.Microsecond }, "--busy-poll"},
		{"busy poll too long", func(c *Config) { c.BusyPoll = 2 * time.Millisecond }, "0 (off) to 1ms"},
		{"unknown vxlan data plane", func(c *Config) { c.VXLANDataplane = "ebpf" }, "--vxlan-dataplane"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := validConfig()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), tc.flag) {
				t.Fatalf("error %q does not name %s", err, tc.flag)
			}
		})
	}
}
