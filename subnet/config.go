package subnet

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
)

// Backend types overlayd implements.
const (
	BackendUDP    = "udp"
	BackendVXLAN  = "vxlan"
	BackendHostGW = "host-gw"
)

// Default backend values, as flanneld uses them.
const (
	DefaultUDPPort   = 8285 // flannel's udp backend
	DefaultVXLANPort = 8472 // the Linux kernel's vxlan default, which flannel keeps
	DefaultVNI       = 1
)

// Config is flannel's network config, the JSON under <prefix>/config, with
// flannel's defaults filled in and its checks applied (see ParseConfig).
type Config struct {
	Network   netip.Prefix // the overlay, host bits cleared (flannel clears them too)
	SubnetLen int          // prefix length of every host's lease
	SubnetMin netip.Addr   // first leasable subnet
	SubnetMax netip.Addr   // last leasable subnet

	// EnableIPv4 is flannel's switch (default true). overlayd leases and
	// routes IPv4 only, so it must stay true.
	EnableIPv4 bool
	// EnableIPv6 and IPv6Network are parsed so that a dual-stack flannel
	// config is accepted, but overlayd does not use them (see Ignored).
	EnableIPv6  bool
	IPv6Network netip.Prefix

	Backend BackendConfig

	// Ignored is what ParseConfig accepted but overlayd does not use:
	// unknown fields (typos) and flannel fields overlayd does not
	// implement, as errors.Join of *ConfigError; nil if none. flanneld
	// ignores unknown fields, so ParseConfig does too: `config put`
	// refuses such a config, `run` warns about it.
	Ignored error
}

// BackendConfig is the "Backend" object of the network config.
type BackendConfig struct {
	Type string // BackendUDP, BackendVXLAN or BackendHostGW
	Port int    // underlay UDP port: udp 8285, vxlan 8472 unless set; 0 for host-gw
	VNI  int    // vxlan only: default 1
	MTU  int    // vxlan only: underlay MTU; 0 means the interface's MTU
	// Raw is the Backend object exactly as written (nil when absent), for
	// backend keys this struct does not model (GBP, DirectRouting, ...).
	Raw json.RawMessage
}

// ConfigError is a problem in the network config. Field names the JSON field
// ("SubnetLen", "Backend.Port"); it is empty when the JSON itself is broken.
type ConfigError struct {
	Field string
	Msg   string // what is wrong and how to fix it
}

// ErrInvalidConfig matches every *ConfigError (errors.Is): the config must
// be fixed, retrying will not help.
var ErrInvalidConfig = errors.New("invalid network config")

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

func (e *ConfigError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return fmt.Sprintf("field %q: %s", e.Field, e.Msg)
}

func fieldErr(field, format string, args ...any) error {
	return &ConfigError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ParseConfig parses and checks a flannel network config. Field names are
// case-insensitive, as in flannel. Errors are *ConfigError naming the field.
//
// The rules are flanneld v0.28's (CheckNetworkConfig, parseBackendType):
// Network is IPv4 and /28 or larger; SubnetLen defaults to 24 for a /22 or
// larger Network and to the Network's length + 2 otherwise, and must lie in
// [Network length + 2, 30]; SubnetMin defaults to the second subnet and
// SubnetMax to the last one, both inside Network and aligned to SubnetLen. A
// missing Backend means "udp", as in flannel's code (its docs say vxlan).
func ParseConfig(data []byte) (*Config, error) {
	var raw struct {
		Network     *string
		SubnetLen   int
		SubnetMin   string
		SubnetMax   string
		EnableIPv4  *bool
		EnableIPv6  bool
		IPv6Network string
		Backend     json.RawMessage
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, jsonErr("", err)
	}

	c := &Config{EnableIPv4: raw.EnableIPv4 == nil || *raw.EnableIPv4, EnableIPv6: raw.EnableIPv6}
	if !c.EnableIPv4 {
		return nil, fieldErr("EnableIPv4", "false is not supported: overlayd leases IPv4 subnets only; remove the field or set it to true")
	}
	if err := c.parseNetwork(raw.Network); err != nil {
		return nil, err
	}
	if err := c.parseSubnetLen(raw.SubnetLen); err != nil {
		return nil, err
	}
	if err := c.parseRange(raw.SubnetMin, raw.SubnetMax); err != nil {
		return nil, err
	}
	if c.EnableIPv6 {
		p, err := netip.ParsePrefix(raw.IPv6Network)
		if err != nil || !p.Addr().Is6() || p.Addr().Is4In6() {
			return nil, fieldErr("IPv6Network", "%q is not an IPv6 CIDR; EnableIPv6 needs one, e.g. \"fd00:100::/48\"", raw.IPv6Network)
		}
		c.IPv6Network = p.Masked()
	}
	be, err := parseBackend(raw.Backend)
	if err != nil {
		return nil, err
	}
	c.Backend = be
	c.Ignored = checkFields(data)
	return c, nil
}

func (c *Config) parseNetwork(s *string) error {
	if s == nil || *s == "" {
		return fieldErr("Network", "missing; set it to the overlay's IPv4 CIDR, e.g. \"Network\":\"10.244.0.0/16\"")
	}
	p, err := netip.ParsePrefix(*s)
	if err != nil || !p.Addr().Is4() {
		return fieldErr("Network", "%q is not an IPv4 CIDR; use one like \"10.244.0.0/16\"", *s)
	}
	if p.Bits() > 28 {
		return fieldErr("Network", "/%d is too small: a Network must be /28 or larger to hold four subnets", p.Bits())
	}
	c.Network = p.Masked()
	return nil
}

// defaultSubnetLen is flannel's: a /24 per host when the Network can hold
// at least four of them, else a quarter of the Network.
func defaultSubnetLen(networkBits int) int {
	if networkBits <= 22 {
		return 24
	}
	return networkBits + 2
}

func (c *Config) parseSubnetLen(n int) error {
	nb := c.Network.Bits()
	def := defaultSubnetLen(nb)
	switch {
	case n == 0:
		c.SubnetLen = def
		return nil
	case n < 0:
		return fieldErr("SubnetLen", "%d is negative; use %d for a /%d Network", n, def, nb)
	case n > 30:
		return fieldErr("SubnetLen", "%d is larger than 30; use %d for a /%d Network", n, def, nb)
	case n < nb+2:
		return fieldErr("SubnetLen", "%d leaves room for fewer than four subnets in a /%d Network; use %d to 30 (default %d)", n, nb, nb+2, def)
	}
	c.SubnetLen = n
	return nil
}

func (c *Config) parseRange(minStr, maxStr string) error {
	size := uint32(1) << (32 - c.SubnetLen)
	first := addrU32(c.Network.Addr())
	last := first | ^prefixMask(c.Network.Bits())

	// Flannel skips the first subnet: its .0 would be the Network's address.
	c.SubnetMin = u32Addr(first + size)
	c.SubnetMax = u32Addr(last - size + 1)
	var err error
	if minStr != "" {
		if c.SubnetMin, err = c.parseBound("SubnetMin", minStr); err != nil {
			return err
		}
	}
	if maxStr != "" {
		if c.SubnetMax, err = c.parseBound("SubnetMax", maxStr); err != nil {
			return err
		}
	}
	if c.SubnetMax.Less(c.SubnetMin) {
		return fieldErr("SubnetMax", "%s is below SubnetMin %s; swap them or widen the range", c.SubnetMax, c.SubnetMin)
	}
	return nil
}

func (c *Config) parseBound(field, s string) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	if err != nil || !a.Is4() {
		return netip.Addr{}, fieldErr(field, "%q is not an IPv4 address; use a subnet address like %q", s, c.Network.Addr().String())
	}
	if !c.Network.Contains(a) {
		return netip.Addr{}, fieldErr(field, "%s is outside Network %s; use an address inside it", a, c.Network)
	}
	if aligned := netip.PrefixFrom(a, c.SubnetLen).Masked().Addr(); aligned != a {
		return netip.Addr{}, fieldErr(field, "%s is not on a /%d boundary (SubnetLen); use %s", a, c.SubnetLen, aligned)
	}
	return a, nil
}

func parseBackend(raw json.RawMessage) (BackendConfig, error) {
	be := BackendConfig{Type: BackendUDP}
	if len(raw) == 0 {
		be.Port = DefaultUDPPort
		return be, nil
	}
	be.Raw = bytes.Clone(raw)
	var fields struct {
		Type string
		Port int
		VNI  *int
		MTU  int
	}
	if err := json.Unmarshal(raw, &fields); err != nil {
		return be, jsonErr("Backend", err)
	}
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return be, fieldErr("Backend", "null is not a backend; use e.g. {\"Type\":\"udp\"} or leave Backend out")
	}
	be.Type = fields.Type
	switch fields.Type {
	case BackendUDP, BackendVXLAN, BackendHostGW:
	case "":
		return be, fieldErr("Backend.Type", "missing; use \"udp\", \"vxlan\" or \"host-gw\"")
	default:
		return be, fieldErr("Backend.Type", "%q is not supported by overlayd; use \"udp\", \"vxlan\" or \"host-gw\"", fields.Type)
	}
	if fields.Port < 0 || fields.Port > 65535 {
		return be, fieldErr("Backend.Port", "%d is not a UDP port; use 1 to 65535, or leave it out for the default", fields.Port)
	}
	if fields.MTU < 0 || fields.MTU > 65535 {
		return be, fieldErr("Backend.MTU", "%d is not an MTU; leave it out to use the interface's MTU", fields.MTU)
	}
	switch be.Type {
	case BackendUDP:
		// flanneld would bind port 0 (a random port) for an explicit 0,
		// which no peer could reach: treat it as unset.
		be.Port = cmp0(fields.Port, DefaultUDPPort)
	case BackendVXLAN:
		be.Port = cmp0(fields.Port, DefaultVXLANPort)
		be.VNI = DefaultVNI
		if fields.VNI != nil {
			be.VNI = *fields.VNI
		}
		if be.VNI < 0 || be.VNI > 1<<24-1 {
			return be, fieldErr("Backend.VNI", "%d is not a 24-bit VXLAN network identifier; use 0 to 16777215 (default 1)", be.VNI)
		}
		be.MTU = fields.MTU
	}
	return be, nil
}

func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// jsonErr turns encoding/json errors into a ConfigError naming the field.
func jsonErr(parent string, err error) error {
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		field := te.Field
		switch {
		case parent != "" && field != "":
			field = parent + "." + field
		case parent != "":
			field = parent
		}
		return fieldErr(field, "must be a JSON %s, not %s", jsonKind(te.Type), te.Value)
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return &ConfigError{Field: parent, Msg: fmt.Sprintf("invalid JSON at byte %d: %v", se.Offset, se)}
	}
	return &ConfigError{Field: parent, Msg: fmt.Sprintf("invalid JSON: %v", err)}
}

func jsonKind(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Uint, reflect.Uint32:
		return "integer"
	case reflect.Bool:
		return "boolean (true or false)"
	case reflect.Struct, reflect.Map:
		return "object"
	}
	return t.Kind().String()
}

// Compatible reports whether sn is a lease this config hands out: an IPv4
// subnet of SubnetLen bits, aligned, between SubnetMin and SubnetMax
// (flannel's isSubnetConfigCompat, plus the alignment check).
func (c *Config) Compatible(sn netip.Prefix) bool {
	return sn.IsValid() && sn.Addr().Is4() && sn.Bits() == c.SubnetLen && sn.Masked() == sn &&
		!sn.Addr().Less(c.SubnetMin) && !c.SubnetMax.Less(sn.Addr())
}

func addrU32(a netip.Addr) uint32 {
	b := a.As4()
	return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
}

func u32Addr(u uint32) netip.Addr {
	return netip.AddrFrom4([4]byte{byte(u >> 24), byte(u >> 16), byte(u >> 8), byte(u)})
}

func prefixMask(bits int) uint32 {
	if bits == 0 {
		return 0
	}
	return ^uint32(0) << (32 - bits)
}
