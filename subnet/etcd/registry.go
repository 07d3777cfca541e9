// Package etcd is overlayd's subnet registry on etcd (API v3), in flannel's
// schema so that overlayd and flanneld hosts share one registry:
//
//	<prefix>/config             the network config (JSON, see subnet.ParseConfig)
//	<prefix>/subnets/<ip>-<len> one lease per host (JSON, see subnet.LeaseAttrs),
//	                            attached to an etcd lease of the lease TTL
//
// It is the only overlayd package that imports etcd. It also runs an
// embedded single-node etcd (StartEmbedded) for demos, tests and small clusters.
package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/overlayd/overlayd/subnet"
)

// Defaults, flanneld's where it has one.
const (
	DefaultPrefix         = "/coreos.com/network"
	DefaultEndpoint       = "http://127.0.0.1:2379"
	DefaultDialTimeout    = 5 * time.Second
	DefaultRequestTimeout = 10 * time.Second
)

// Options configures the etcd connection.
type Options struct {
	Endpoints []string // default DefaultEndpoint
	Prefix    string   // key prefix, default DefaultPrefix

	// TLS, as flanneld's --etcd-cafile/--etcd-certfile/--etcd-keyfile. Any
	// of them turns TLS on; the endpoints must then be https://.
	CAFile, CertFile, KeyFile string
	Username, Password        string

	DialTimeout time.Duration // default DefaultDialTimeout
	// RequestTimeout bounds every request but watches, so that an
	// unreachable etcd fails calls instead of blocking them. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration

	// Dialer, when set, opens the connections to etcd (tests use it to
	// dial from inside a network namespace). addr is host:port.
	Dialer func(ctx context.Context, addr string) (net.Conn, error)

	Logger *slog.Logger // nil logs nothing; the etcd client logs here too
}

// Registry implements subnet.Registry on etcd. Its methods are safe for
// concurrent use.
type Registry struct {
	cli       *clientv3.Client
	prefix    string
	endpoints []string
	timeout   time.Duration
	dial      func(ctx context.Context, addr string) (net.Conn, error) // Options.Dialer, or TCP
	log       *slog.Logger
}

var _ subnet.Registry = (*Registry)(nil)

// New connects to etcd. It does not wait for etcd to answer (unless
// Username is set, then at most DialTimeout): an unreachable etcd makes
// later calls fail after RequestTimeout, and callers retry.
func New(opts Options) (*Registry, error) {
	if len(opts.Endpoints) == 0 {
		opts.Endpoints = []string{DefaultEndpoint}
	}
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = DefaultDialTimeout
	}
	if opts.RequestTimeout <= 0 {
		opts.RequestTimeout = DefaultRequestTimeout
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if (opts.Username == "") != (opts.Password == "") {
		return nil, errors.New("etcd: --etcd-username and --etcd-password must be given together")
	}
	tlsConfig, err := loadTLS(opts.CAFile, opts.CertFile, opts.KeyFile)
	if err != nil {
		return nil, err
	}
	for _, ep := range opts.Endpoints {
		if tlsConfig != nil && strings.HasPrefix(ep, "http://") {
			return nil, fmt.Errorf("etcd endpoint %s: TLS files are given (--etcd-cafile, --etcd-certfile, --etcd-keyfile) but the endpoint is http://; use https://", ep)
		}
	}

	cfg := clientv3.Config{
		Endpoints:   opts.Endpoints,
		DialTimeout: opts.DialTimeout,
		// Notice a dead connection within seconds, so watches move on.
		DialKeepAliveTime:    10 * time.Second,
		DialKeepAliveTimeout: 5 * time.Second,
		TLS:                  tlsConfig,
		Username:             opts.Username,
		Password:             opts.Password,
		Logger:               newZapLogger(log.With("component", "etcd-client")),
	}
	if opts.Dialer != nil {
		cfg.DialOptions = append(cfg.DialOptions, grpc.WithContextDialer(opts.Dialer))
	}
	cli, err := clientv3.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("etcd client for %s: %w", strings.Join(opts.Endpoints, ","), err)
	}
	dial := opts.Dialer
	if dial == nil {
		dial = func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}
	}
	return &Registry{cli: cli, prefix: opts.Prefix, endpoints: opts.Endpoints, timeout: opts.RequestTimeout, dial: dial, log: log}, nil
}

func loadTLS(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-cafile: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--etcd-cafile %s: no PEM certificate found", caFile)
		}
	}
	switch {
	case certFile != "" && keyFile != "":
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("--etcd-certfile %s / --etcd-keyfile %s: %w", certFile, keyFile, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case certFile != "":
		return nil, errors.New("--etcd-certfile needs --etcd-keyfile too")
	case keyFile != "":
		return nil, errors.New("--etcd-keyfile needs --etcd-certfile too")
	}
	return cfg, nil
}

// Close closes the connection to etcd.
func (r *Registry) Close() error {
	return r.cli.Close()
}

func (r *Registry) configKey() string { return path.Join(r.prefix, "config") }

// subnetsDir ends in a slash, so that a prefix watch does not also catch
// keys like <prefix>/subnetsfoo.
func (r *Registry) subnetsDir() string { return path.Join(r.prefix, "subnets") + "/" }

func (r *Registry) subnetKey(sn netip.Prefix) string { return r.subnetsDir() + subnet.SubnetKey(sn) }

func (r *Registry) request(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, r.timeout)
}

const exampleConfig = `{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}`

// unreachable turns a request that got no answer into an error that names
// the endpoints, the timeout and what to check; other errors pass as
// they are.
func (r *Registry) unreachable(err error) error {
	if !errors.Is(err, context.DeadlineExceeded) && status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
		return err
	}
	notes := dialNotes(r.probe(context.Background()))
	if notes != "" {
		notes = "; " + notes
	}
	return fmt.Errorf("etcd at %s did not answer within %s (%w%s); check that etcd runs and listens there (--etcd-endpoints), "+
		"that this host (this network namespace) reaches it, and that the scheme matches its TLS (https:// with --etcd-cafile)",
		strings.Join(r.endpoints, ","), r.timeout, err, notes)
}

// probeTimeout bounds a connection attempt that says why etcd is not
// answering.
const probeTimeout = 2 * time.Second

// CheckReachable fails at once, naming what each endpoint said, when every
// endpoint refuses a connection outright (nothing listens, no route): a
// one-shot command then need not wait its whole timeout for an etcd that
// is not there. An endpoint that does not answer in time, or that it
// cannot dial by itself (not a host:port URL), may still answer etcd's own
// client, so it lets the command go on.
func (r *Registry) CheckReachable(ctx context.Context) error {
	results := r.probe(ctx)
	if len(results) < len(r.endpoints) {
		return nil
	}
	for _, res := range results {
		if !refused(res.err) {
			return nil
		}
	}
	return fmt.Errorf("etcd at %s cannot be reached (%s); check that etcd runs and listens there (--etcd-endpoints), "+
		"and that this host (this network namespace) reaches it",
		strings.Join(r.endpoints, ","), dialNotes(results))
}

// refused reports whether a dial error is a definite no: refused, no
// route, or a name that does not resolve; not a timeout.
func refused(err error) bool {
	var dnsErr *net.DNSError
	switch {
	case err == nil:
		return false
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ENETUNREACH), errors.Is(err, syscall.EHOSTUNREACH):
		return true
	case errors.As(err, &dnsErr):
		return dnsErr.IsNotFound
	}
	return false
}

// dialResult is what connecting to one endpoint's address gave.
type dialResult struct {
	addr string
	err  error
}

// probe connects to every endpoint's address at once, as the etcd client
// would (through Options.Dialer if set), and reports each result;
// endpoints that are not http(s)://host:port are left out.
func (r *Registry) probe(ctx context.Context) []dialResult {
	results := make([]dialResult, 0, len(r.endpoints))
	for _, ep := range r.endpoints {
		u, err := url.Parse(ep)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Port() == "" {
			continue
		}
		results = append(results, dialResult{addr: u.Host})
	}
	ctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for i := range results {
		wg.Go(func() {
			c, err := r.dial(ctx, results[i].addr)
			if err == nil {
				c.Close()
			}
			results[i].err = err
		})
	}
	wg.Wait()
	return results
}

// dialNotes renders the failed dials as "addr: why, ...", or "".
func dialNotes(results []dialResult) string {
	var notes []string
	for _, res := range results {
		if res.err == nil {
			continue
		}
		why := res.err.Error()
		var opErr *net.OpError
		if errors.As(res.err, &opErr) && opErr.Err != nil {
			why = opErr.Err.Error() // "connect: connection refused", without the addresses again
		}
		notes = append(notes, res.addr+": "+why)
	}
	return strings.Join(notes, ", ")
}

// missingConfig is the error for an absent <prefix>/config; `run` and
// `config get` both report it, with the same fix.
func (r *Registry) missingConfig(key string) error {
	flags := "--etcd-endpoints " + strings.Join(r.endpoints, ",")
	if r.prefix != DefaultPrefix {
		flags += " --etcd-prefix " + r.prefix
	}
	return fmt.Errorf("%w: etcd has no key %s; write one with: overlayd config put %s '%s' "+
		"(or ETCDCTL_API=3 etcdctl put %s '...': overlayd and flanneld read the v3 API)",
		subnet.ErrConfigNotFound, key, flags, exampleConfig, key)
}

// GetConfig reads and checks <prefix>/config.
func (r *Registry) GetConfig(ctx context.Context) (*subnet.Config, error) {
	key := r.configKey()
	ctx, cancel := r.request(ctx)
	defer cancel()
	resp, err := r.cli.Get(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("network config %s: get from etcd: %w", key, r.unreachable(err))
	}
	if len(resp.Kvs) == 0 {
		return nil, r.missingConfig(key)
	}
	cfg, err := subnet.ParseConfig(resp.Kvs[0].Value)
	if err != nil {
		return nil, fmt.Errorf("network config %s: %w", key, err)
	}
	return cfg, nil
}

// PutConfig checks raw with subnet.ParseConfig and stores it, unchanged,
// as <prefix>/config. Fields ParseConfig would ignore (Config.Ignored:
// typos, flannel features overlayd lacks) are refused too.
func (r *Registry) PutConfig(ctx context.Context, raw []byte) error {
	key := r.configKey()
	cfg, err := subnet.ParseConfig(raw)
	if err == nil {
		err = cfg.Ignored
	}
	if err != nil {
		return fmt.Errorf("network config %s: %w", key, err)
	}
	ctx, cancel := r.request(ctx)
	defer cancel()
	if _, err := r.cli.Put(ctx, key, string(raw)); err != nil {
		return fmt.Errorf("network config %s: put to etcd: %w", key, r.unreachable(err))
	}
	return nil
}

// ListLeases reads every lease. Keys or values that do not parse are
// logged and skipped. Expirations are left zero (see subnet.Lease).
func (r *Registry) ListLeases(ctx context.Context) ([]subnet.Lease, int64, error) {
	ctx, cancel := r.request(ctx)
	defer cancel()
	leases, _, rev, err := r.list(ctx)
	return leases, rev, err
}

// ListLeasesExpiring is ListLeases with each lease's Expiration filled in
// from its etcd lease's remaining time (TimeToLive): one more request per
// etcd lease, for `overlayd leases`. A key without an etcd lease (a
// reservation) keeps a zero Expiration.
func (r *Registry) ListLeasesExpiring(ctx context.Context) ([]subnet.Lease, error) {
	ctx, cancel := r.request(ctx)
	defer cancel()
	leases, ids, _, err := r.list(ctx)
	if err != nil {
		return nil, err
	}
	for i, id := range ids {
		if id == 0 {
			continue
		}
		asked := time.Now()
		ttl, err := r.cli.TimeToLive(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("lease %s: time to live of etcd lease %x: %w", leases[i].Subnet, int64(id), r.unreachable(err))
		}
		// TTL -1: expired between the two requests.
		leases[i].Expiration = asked.Add(time.Duration(max(ttl.TTL, 0)) * time.Second)
	}
	return leases, nil
}

// list reads every lease that parses, the etcd lease each key is attached
// to (0: none), and the revision they were read at.
func (r *Registry) list(ctx context.Context) ([]subnet.Lease, []clientv3.LeaseID, int64, error) {
	resp, err := r.cli.Get(ctx, r.subnetsDir(), clientv3.WithPrefix())
	if err != nil {
		return nil, nil, 0, fmt.Errorf("list %s: %w", r.subnetsDir(), r.unreachable(err))
	}
	leases := make([]subnet.Lease, 0, len(resp.Kvs))
	ids := make([]clientv3.LeaseID, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		l, err := decodeLease(kv.Key, kv.Value)
		if err != nil {
			r.log.Warn("skipping unreadable lease", "key", string(kv.Key), "error", err)
			continue
		}
		leases = append(leases, l)
		ids = append(ids, clientv3.LeaseID(kv.Lease))
	}
	return leases, ids, resp.Header.Revision, nil
}

func decodeLease(key, value []byte) (subnet.Lease, error) {
	sn, err := subnet.ParseSubnetKey(string(key))
	if err != nil {
		return subnet.Lease{}, err
	}
	l := subnet.Lease{Subnet: sn}
	if err := json.Unmarshal(value, &l.Attrs); err != nil {
		return subnet.Lease{}, fmt.Errorf("lease %s: %w", key, err)
	}
	return l, nil
}

// ttlSeconds rounds ttl up to etcd's whole seconds.
func ttlSeconds(ttl time.Duration) int64 {
	return max(int64((ttl+time.Second-1)/time.Second), 1)
}

// CreateLease puts the lease key in a transaction that succeeds only if
// the key does not exist, attached to a new etcd lease (flannel's
// createSubnet). When the key exists the etcd lease is revoked again;
// when the transaction's outcome is unknown it is left to expire.
func (r *Registry) CreateLease(ctx context.Context, sn netip.Prefix, attrs subnet.LeaseAttrs, ttl time.Duration) (subnet.Lease, error) {
	key := r.subnetKey(sn)
	val, err := json.Marshal(attrs)
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("lease %s: %w", key, err)
	}
	ctx, cancel := r.request(ctx)
	defer cancel()
	start := time.Now()
	grant, err := r.cli.Grant(ctx, ttlSeconds(ttl))
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("lease %s: grant etcd lease: %w", key, err)
	}
	resp, err := r.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.Version(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val), clientv3.WithLease(grant.ID))).
		Commit()
	if err != nil {
		// The put may have landed before the reply was lost: revoking
		// would delete it. The grant expires on its own if it did not;
		// if it did, the next try finds the lease ours and renews it.
		return subnet.Lease{}, fmt.Errorf("lease %s: create: %w", key, err)
	}
	if !resp.Succeeded {
		r.revoke(grant.ID)
		return subnet.Lease{}, fmt.Errorf("lease %s: %w", key, subnet.ErrLeaseExists)
	}
	return subnet.Lease{Subnet: sn, Attrs: attrs, Expiration: start.Add(time.Duration(grant.TTL) * time.Second)}, nil
}

// RenewLease keeps the key's etcd lease alive (KeepAliveOnce) and rewrites
// the value only if attrs differ, keeping its etcd lease. A key without an
// etcd lease (a reservation) stays without one. A key whose etcd lease is
// shorter than ttl (written by someone else) moves to a new etcd lease of
// ttl, and the old one is revoked if nothing else is attached to it.
func (r *Registry) RenewLease(ctx context.Context, sn netip.Prefix, attrs subnet.LeaseAttrs, ttl time.Duration) (subnet.Lease, error) {
	key := r.subnetKey(sn)
	val, err := json.Marshal(attrs)
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("lease %s: %w", key, err)
	}
	ctx, cancel := r.request(ctx)
	defer cancel()
	start := time.Now()
	get, err := r.cli.Get(ctx, key)
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("lease %s: get: %w", key, err)
	}
	if len(get.Kvs) == 0 {
		return subnet.Lease{}, fmt.Errorf("lease %s: %w", key, subnet.ErrLeaseNotFound)
	}
	kv := get.Kvs[0]
	l := subnet.Lease{Subnet: sn, Attrs: attrs}
	id := clientv3.LeaseID(kv.Lease)
	cur, err := decodeLease(kv.Key, kv.Value)
	switch {
	case err != nil:
		// Our subnet's key, unreadable to every host: write ours back,
		// with a TTL, as a renewal would have left it.
		r.log.Warn("our lease holds an unreadable value; rewriting it", "key", key, "error", err)
		return r.moveLease(ctx, kv.ModRevision, id, l, val, ttl)
	case cur.Attrs.PublicIP != attrs.PublicIP:
		// Ours expired or was deleted, and another host leased the subnet
		// before our watch said so: theirs now, not to be kept alive or
		// rewritten.
		return subnet.Lease{}, fmt.Errorf("lease %s: %w: it has PublicIP %s", key, subnet.ErrLeaseTaken, cur.Attrs.PublicIP)
	}
	if id != clientv3.NoLease {
		ka, err := r.cli.KeepAliveOnce(ctx, id)
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return subnet.Lease{}, fmt.Errorf("lease %s: etcd lease %x expired: %w", key, id, subnet.ErrLeaseNotFound)
		}
		if err != nil {
			return subnet.Lease{}, fmt.Errorf("lease %s: keep etcd lease %x alive: %w", key, id, err)
		}
		if ka.TTL < ttlSeconds(ttl) {
			return r.moveLease(ctx, kv.ModRevision, id, l, val, ttl)
		}
		l.Expiration = start.Add(time.Duration(ka.TTL) * time.Second)
	}
	if !bytes.Equal(kv.Value, val) {
		if err := r.putIfUnchanged(ctx, key, kv.ModRevision, clientv3.OpPut(key, string(val), clientv3.WithIgnoreLease())); err != nil {
			return subnet.Lease{}, err
		}
	}
	return l, nil
}

// moveLease attaches the key, unchanged since modRev, to a new etcd lease.
func (r *Registry) moveLease(ctx context.Context, modRev int64, old clientv3.LeaseID, l subnet.Lease, val []byte, ttl time.Duration) (subnet.Lease, error) {
	key := r.subnetKey(l.Subnet)
	start := time.Now()
	grant, err := r.cli.Grant(ctx, ttlSeconds(ttl))
	if err != nil {
		return subnet.Lease{}, fmt.Errorf("lease %s: grant etcd lease: %w", key, err)
	}
	if err := r.putIfUnchanged(ctx, key, modRev, clientv3.OpPut(key, string(val), clientv3.WithLease(grant.ID))); err != nil {
		r.revoke(grant.ID)
		return subnet.Lease{}, err
	}
	if old != clientv3.NoLease {
		r.revokeIfUnused(old)
	}
	l.Expiration = start.Add(time.Duration(grant.TTL) * time.Second)
	return l, nil
}

// putIfUnchanged runs op only if key is still at modRev.
func (r *Registry) putIfUnchanged(ctx context.Context, key string, modRev int64, op clientv3.Op) error {
	resp, err := r.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", modRev)).Then(op).Commit()
	if err != nil {
		return fmt.Errorf("lease %s: update: %w", key, err)
	}
	if !resp.Succeeded {
		return fmt.Errorf("lease %s: changed by someone else while being updated; try again", key)
	}
	return nil
}

// DeleteLease deletes the key, if it still carries owner as its PublicIP
// (any value when owner is the zero Addr), and then revokes its etcd
// lease, unless other keys are still attached to it.
func (r *Registry) DeleteLease(ctx context.Context, sn netip.Prefix, owner netip.Addr) error {
	key := r.subnetKey(sn)
	ctx, cancel := r.request(ctx)
	defer cancel()
	var prev *mvccpb.KeyValue
	if !owner.IsValid() {
		resp, err := r.cli.Delete(ctx, key, clientv3.WithPrevKV())
		if err != nil {
			return fmt.Errorf("lease %s: delete: %w", key, err)
		}
		if resp.Deleted == 1 {
			prev = resp.PrevKvs[0]
		}
	} else {
		get, err := r.cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("lease %s: get: %w", key, err)
		}
		if len(get.Kvs) == 0 {
			return nil
		}
		prev = get.Kvs[0]
		cur, err := decodeLease(prev.Key, prev.Value)
		switch {
		case err != nil:
			return fmt.Errorf("lease %s: not deleted: %w", key, err)
		case cur.Attrs.PublicIP != owner:
			return fmt.Errorf("lease %s: not deleted: %w: it has PublicIP %s", key, subnet.ErrLeaseTaken, cur.Attrs.PublicIP)
		}
		if err := r.putIfUnchanged(ctx, key, prev.ModRevision, clientv3.OpDelete(key)); err != nil {
			return err
		}
	}
	if prev != nil && prev.Lease != 0 {
		r.revokeIfUnused(clientv3.LeaseID(prev.Lease))
	}
	return nil
}

// revoke frees an etcd lease we granted, even when the request's context
// is spent; failing is harmless, as the lease then expires.
func (r *Registry) revoke(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	if _, err := r.cli.Revoke(ctx, id); err != nil && !errors.Is(err, rpctypes.ErrLeaseNotFound) {
		r.log.Debug("could not revoke etcd lease; it will expire", "lease_id", fmt.Sprintf("%x", id), "error", err)
	}
}

// revokeIfUnused revokes id if no key is attached to it any more, so that
// no orphan leases pile up (flanneld leaves one behind at every renewal).
func (r *Registry) revokeIfUnused(id clientv3.LeaseID) {
	ctx, cancel := context.WithTimeout(context.Background(), r.timeout)
	defer cancel()
	ttl, err := r.cli.TimeToLive(ctx, id, clientv3.WithAttachedKeys())
	if err != nil || ttl.TTL <= 0 || len(ttl.Keys) > 0 {
		return
	}
	r.revoke(id)
}

// errRewound says that etcd's revision is behind the one a watch resumes
// from: etcd was restored from a snapshot or replaced by an empty one. A
// watch from a revision etcd has not reached yet would wait for it in
// silence, missing every change until then.
var errRewound = errors.New("etcd's revision is behind the watch's: etcd was restored or replaced")

// WatchLeases watches <prefix>/subnets/ from revision since, requiring an
// etcd leader, and sends one result per etcd response. When since has been
// compacted away, or etcd's revision went back below it (errRewound), it
// re-lists and sends a Resync, then goes on from there.
func (r *Registry) WatchLeases(ctx context.Context, since int64, out chan<- subnet.WatchResult) error {
	for {
		err := r.watchFrom(ctx, since, out)
		switch {
		case errors.Is(err, rpctypes.ErrCompacted):
			r.log.Info("lease watch fell behind etcd compaction; re-listing", "from_revision", since)
		case errors.Is(err, errRewound):
			r.log.Warn("etcd's revision went back (restored or replaced?); re-listing the leases", "from_revision", since, "error", err)
		default:
			return err
		}
		leases, rev, err := r.ListLeases(ctx)
		if err != nil {
			return fmt.Errorf("resync after compaction: %w", err)
		}
		if !send(ctx, out, subnet.WatchResult{Revision: rev, Resync: true, Leases: leases}) {
			return ctx.Err()
		}
		since = rev + 1
	}
}

func (r *Registry) watchFrom(ctx context.Context, since int64, out chan<- subnet.WatchResult) error {
	dir := r.subnetsDir()
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(since), clientv3.WithProgressNotify(), clientv3.WithCreatedNotify()}
	for wr := range r.cli.Watch(wctx, dir, opts...) {
		if err := wr.Err(); err != nil {
			return fmt.Errorf("watch %s from revision %d: %w", dir, since, err)
		}
		// Every response carries etcd's revision, the created notice at
		// once: one behind what we have seen means etcd lost history.
		if wr.Header.Revision < since-1 {
			return fmt.Errorf("watch %s from revision %d at etcd revision %d: %w", dir, since, wr.Header.Revision, errRewound)
		}
		res := subnet.WatchResult{Events: make([]subnet.Event, 0, len(wr.Events))}
		switch {
		case len(wr.Events) > 0:
			// Not the header's revision: a response catching up on history
			// may be one of several, and the header is already past them all.
			res.Revision = wr.Events[len(wr.Events)-1].Kv.ModRevision
		case wr.IsProgressNotify():
			res.Revision = wr.Header.Revision
		default:
			continue // the "created" notice
		}
		for _, ev := range wr.Events {
			if e, ok := r.decodeEvent(ev); ok {
				res.Events = append(res.Events, e)
			}
		}
		if !send(ctx, out, res) {
			return ctx.Err()
		}
		since = res.Revision + 1
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	return fmt.Errorf("watch %s: closed by the etcd client", dir)
}

// decodeEvent turns a change under the subnets directory into a lease
// event. A lease rewritten with a value that cannot be read is removed,
// as ListLeases leaves it out: keeping the peer it was would make the
// watch and a re-list disagree.
func (r *Registry) decodeEvent(ev *clientv3.Event) (subnet.Event, bool) {
	sn, err := subnet.ParseSubnetKey(string(ev.Kv.Key))
	if err != nil {
		return subnet.Event{}, false // never a lease
	}
	removed := subnet.Event{Type: subnet.EventRemoved, Lease: subnet.Lease{Subnet: sn}}
	if ev.Type == clientv3.EventTypeDelete {
		return removed, true
	}
	l, err := decodeLease(ev.Kv.Key, ev.Kv.Value)
	if err != nil {
		r.log.Warn("skipping unreadable lease: no peer for its subnet until it is rewritten", "key", string(ev.Kv.Key), "error", err)
		return removed, true
	}
	return subnet.Event{Type: subnet.EventAdded, Lease: l}, true
}

func send(ctx context.Context, out chan<- subnet.WatchResult, r subnet.WatchResult) bool {
	select {
	case out <- r:
		return true
	case <-ctx.Done():
		return false
	}
}
