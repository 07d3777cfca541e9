//go:build !linux

package traffic

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// RRServer needs Linux; see rr_linux.go.
type RRServer struct{}

// ListenRR needs Linux; see rr_linux.go.
func ListenRR(addr netip.AddrPort) (*RRServer, error) {
	return nil, fmt.Errorf("rr server %s: %w", addr, errors.ErrUnsupported)
}

func (s *RRServer) Addr() netip.AddrPort { return netip.AddrPort{} }
func (s *RRServer) Serve() error         { return errors.ErrUnsupported }
func (s *RRServer) Close() error         { return nil }

// RRClient needs Linux; see rr_linux.go.
type RRClient struct{}

// RR needs Linux; see rr_linux.go.
func RR(ctx context.Context, opts RROptions) (RRResult, error) {
	return RRResult{}, fmt.Errorf("rr: %w", errors.ErrUnsupported)
}

// DialRR needs Linux; see rr_linux.go.
func DialRR(ctx context.Context, opts RROptions) (*RRClient, error) {
	return nil, fmt.Errorf("rr: %w", errors.ErrUnsupported)
}

func (c *RRClient) Run(ctx context.Context) (RRResult, error) {
	return RRResult{}, errors.ErrUnsupported
}
func (c *RRClient) Close() error { return nil }
