package etcd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"slices"
	"sync/atomic"

	"go.etcd.io/etcd/server/v3/embed"
)

// EmbedOptions configures an embedded single-node etcd.
type EmbedOptions struct {
	DataDir string // required; created if missing
	Name    string // member name, default "overlayd"
	// ListenClientURLs default to http://127.0.0.1:2379. Port 0 picks a
	// free port: Endpoints reports the real one.
	ListenClientURLs []string
	// AdvertiseClientURLs default to ListenClientURLs.
	AdvertiseClientURLs []string
	ListenPeerURL       string       // default http://127.0.0.1:2380; port 0 picks a free port
	Logger              *slog.Logger // nil logs nothing; etcd's Info lines come as Debug
}

// Embedded is a running embedded etcd.
type Embedded struct {
	etcd      *embed.Etcd
	endpoints []string
	stopping  *atomic.Bool // quiets etcd's logging of its own stop
}

// StartEmbedded starts a single-node etcd and waits until it serves
// clients, or ctx is done. Its data survives a restart on the same DataDir.
func StartEmbedded(ctx context.Context, opts EmbedOptions) (*Embedded, error) {
	if opts.DataDir == "" {
		return nil, errors.New("embedded etcd: DataDir is required")
	}
	if opts.Name == "" {
		opts.Name = "overlayd"
	}
	if len(opts.ListenClientURLs) == 0 {
		opts.ListenClientURLs = []string{"http://127.0.0.1:2379"}
	}
	if len(opts.AdvertiseClientURLs) == 0 {
		opts.AdvertiseClientURLs = opts.ListenClientURLs
	}
	if opts.ListenPeerURL == "" {
		opts.ListenPeerURL = "http://127.0.0.1:2380"
	}

	cfg := embed.NewConfig()
	cfg.Dir = opts.DataDir
	cfg.Name = opts.Name
	var err error
	if cfg.ListenClientUrls, err = parseURLs("listen client URL", opts.ListenClientURLs); err != nil {
		return nil, err
	}
	if cfg.AdvertiseClientUrls, err = parseURLs("advertise client URL", opts.AdvertiseClientURLs); err != nil {
		return nil, err
	}
	if cfg.ListenPeerUrls, err = parseURLs("listen peer URL", []string{opts.ListenPeerURL}); err != nil {
		return nil, err
	}
	cfg.AdvertisePeerUrls = cfg.ListenPeerUrls
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Keep an hour of history: long enough for watchers to resume, short
	// enough that the database does not grow without end.
	cfg.AutoCompactionMode = embed.CompactorModePeriodic
	cfg.AutoCompactionRetention = "1h"
	stopping := new(atomic.Bool)
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(newQuietableZapLogger(opts.Logger, stopping))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd in %s: %w", opts.DataDir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: %w", opts.DataDir, err)
	case <-ctx.Done():
		e.Close()
		return nil, fmt.Errorf("embedded etcd in %s: not ready: %w", opts.DataDir, ctx.Err())
	}

	em := &Embedded{etcd: e, stopping: stopping}
	for _, l := range e.Clients {
		em.endpoints = append(em.endpoints, clientEndpoint(listenURLFor(cfg.ListenClientUrls, l.Addr()), l.Addr()))
	}
	slices.Sort(em.endpoints)
	if opts.Logger != nil {
		opts.Logger.Info("embedded etcd ready", "data_dir", opts.DataDir, "endpoints", em.endpoints)
	}
	return em, nil
}

func parseURLs(what string, ss []string) ([]url.URL, error) {
	out := make([]url.URL, 0, len(ss))
	for _, s := range ss {
		if err := CheckURL(s); err != nil {
			return nil, fmt.Errorf("embedded etcd: %s %w", what, err)
		}
		u, _ := url.Parse(s) // CheckURL parsed it
		out = append(out, *u)
	}
	return out, nil
}

// listenURLFor finds the listen URL that a listener was opened for (etcd
// keeps its listeners in no particular order).
func listenURLFor(urls []url.URL, addr net.Addr) url.URL {
	host, _, _ := net.SplitHostPort(addr.String())
	for _, u := range urls {
		if u.Host == addr.String() {
			return u
		}
	}
	for _, u := range urls {
		if u.Hostname() == host {
			return u
		}
	}
	return urls[0]
}

// clientEndpoint is the URL a client dials for a listener: its real port
// (the listen URL may say 0), and loopback for a wildcard address.
func clientEndpoint(listen url.URL, addr net.Addr) string {
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return listen.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.To4() == nil {
			host = "::1"
		}
	}
	return listen.Scheme + "://" + net.JoinHostPort(host, port)
}

// Endpoints returns the client URLs to dial.
func (e *Embedded) Endpoints() []string { return e.endpoints }

// Err reports a fatal error of the running etcd: `overlayd etcd` waits on it.
func (e *Embedded) Err() <-chan error { return e.etcd.Err() }

// Close stops etcd and waits until it has. What etcd logs while it stops
// (its listeners closing, as errors) is logged at Debug.
func (e *Embedded) Close() error {
	e.stopping.Store(true)
	e.etcd.Close()
	<-e.etcd.Server.StopNotify()
	return nil
}
