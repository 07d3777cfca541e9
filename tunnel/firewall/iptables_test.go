package firewall

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fakeTables is an in-memory iptables. After every change it checks that
// no rule that both the start and the goal have was missing: the no-gap
// promise of Ensure.
type fakeTables struct {
	t      *testing.T
	chains map[string][][]string // "table/chain" -> rules; built-ins exist from the start
	// keep are the rules that must never be absent, by "table/chain".
	keep map[string][][]string
	ops  int
	// reads counts the commands that read one chain or rule; saves, the
	// whole-table reads.
	reads, saves int
}

func newFakeTables(t *testing.T) *fakeTables {
	f := &fakeTables{t: t, chains: map[string][][]string{}, keep: map[string][][]string{}}
	for _, k := range []string{"nat/POSTROUTING", "filter/FORWARD"} {
		f.chains[k] = nil
	}
	return f
}

func key(table, chain string) string { return table + "/" + chain }

var errNoChain = errors.New("no chain")

func (f *fakeTables) changed() {
	f.ops++
	for k, rules := range f.keep {
		for _, r := range rules {
			if !slices.ContainsFunc(f.chains[k], func(h []string) bool { return slices.Equal(h, r) }) {
				f.t.Errorf("op %d: %s lost %q", f.ops, k, r)
			}
		}
	}
}

func (f *fakeTables) Save(table string) ([]string, error) {
	f.saves++
	out := []string{"*" + table}
	var names []string
	for k := range f.chains {
		if tb, name, _ := strings.Cut(k, "/"); tb == table {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	for _, name := range names {
		out = append(out, ":"+name+" - [0:0]")
	}
	for _, name := range names {
		for _, r := range f.chains[key(table, name)] {
			out = append(out, "-A "+name+" "+joinQuoted(r))
		}
	}
	return append(out, "COMMIT", ""), nil
}

func (f *fakeTables) ChainExists(table, chain string) (bool, error) {
	f.reads++
	_, ok := f.chains[key(table, chain)]
	return ok, nil
}

func (f *fakeTables) NewChain(table, chain string) error {
	if _, ok := f.chains[key(table, chain)]; ok {
		return errors.New("chain exists")
	}
	f.chains[key(table, chain)] = [][]string{}
	f.changed()
	return nil
}

func (f *fakeTables) List(table, chain string) ([]string, error) {
	f.reads++
	rules, ok := f.chains[key(table, chain)]
	if !ok {
		return nil, errNoChain
	}
	out := []string{"-N " + chain}
	for _, r := range rules {
		out = append(out, "-A "+chain+" "+joinQuoted(r))
	}
	return out, nil
}

func (f *fakeTables) Insert(table, chain string, pos int, spec ...string) error {
	k := key(table, chain)
	rules, ok := f.chains[k]
	if !ok || pos < 1 || pos > len(rules)+1 {
		return fmt.Errorf("insert %s at %d: bad position", k, pos)
	}
	f.chains[k] = slices.Insert(rules, pos-1, slices.Clone(spec))
	f.changed()
	return nil
}

func (f *fakeTables) Exists(table, chain string, spec ...string) (bool, error) {
	f.reads++
	return slices.ContainsFunc(f.chains[key(table, chain)], func(r []string) bool { return slices.Equal(r, spec) }), nil
}

func (f *fakeTables) DeleteById(table, chain string, id int) error {
	k := key(table, chain)
	rules := f.chains[k]
	if id < 1 || id > len(rules) {
		return fmt.Errorf("delete %s %d: no such rule", k, id)
	}
	f.chains[k] = slices.Delete(rules, id-1, id)
	f.changed()
	return nil
}

func (f *fakeTables) DeleteIfExists(table, chain string, spec ...string) error {
	k := key(table, chain)
	if i := slices.IndexFunc(f.chains[k], func(r []string) bool { return slices.Equal(r, spec) }); i >= 0 {
		f.chains[k] = slices.Delete(f.chains[k], i, i+1)
		f.changed()
	}
	return nil
}

func (f *fakeTables) ClearAndDeleteChain(table, chain string) error {
	for _, rules := range f.chains {
		for _, r := range rules {
			if slices.Contains(r, chain) && r[len(r)-1] == chain {
				return fmt.Errorf("chain %s still jumped to", chain)
			}
		}
	}
	delete(f.chains, key(table, chain))
	f.changed()
	return nil
}

func newFakeIPTables(t *testing.T, o Options) (*IPTables, *fakeTables) {
	f := newFakeTables(t)
	return &IPTables{opts: o, ipt: f}, f
}

// wantInPlace checks the chains hold exactly the rules of (network, subnet)
// with one jump each.
func wantInPlace(t *testing.T, f *fakeTables, network, subnet netip.Prefix, o Options) {
	t.Helper()
	for _, c := range Rules(network, subnet, testIngress, o) {
		if got := f.chains[key(c.Table, c.Name)]; !slices.EqualFunc(got, c.Rules, slices.Equal) {
			t.Errorf("%s: %q, want %q", c.Name, got, c.Rules)
		}
		jumps, returned := 0, false
		for i, r := range f.chains[key(c.Table, c.From)] {
			if slices.Equal(r, c.Jump) {
				jumps++
				if c.First && i != 0 {
					t.Errorf("%s: jump to %s at %d, want first", c.From, c.Name, i+1)
				}
				if returned {
					t.Errorf("%s: jump to %s after a RETURN, never reached", c.From, c.Name)
				}
			}
			returned = returned || slices.Equal(r, []string{"-j", "RETURN"})
		}
		if jumps != 1 {
			t.Errorf("%s: %d jumps to %s", c.From, jumps, c.Name)
		}
	}
}

func TestEnsureInstallsThenLeavesAlone(t *testing.T) {
	o := Options{Masquerade: true, Forward: true, RandomFully: true}
	ipt, f := newFakeIPTables(t, o)
	f.chains["filter/FORWARD"] = [][]string{{"-j", "DOCKER-USER"}}
	// Docker before 28 ends it so; rules appended after it are never reached.
	f.chains["filter/DOCKER-USER"] = [][]string{{"-j", "RETURN"}, {"-s", "192.0.2.0/24", "-j", "DROP"}}
	f.chains["nat/POSTROUTING"] = [][]string{{"-s", "172.17.0.0/16", "-j", "MASQUERADE"}}
	n, err := ipt.Ensure(testNetwork, testSubnet, testIngress)
	if err != nil || n != 5+2+2+3 {
		t.Fatalf("first Ensure: %d changes, %v; want 12 (9 rules, 3 jumps)", n, err)
	}
	wantInPlace(t, f, testNetwork, testSubnet, o)
	if f.chains["filter/FORWARD"][0][1] != "DOCKER-USER" {
		t.Errorf("the filter jump went before the host's rules: %q", f.chains["filter/FORWARD"])
	}
	if user := f.chains["filter/DOCKER-USER"]; len(user) != 3 || user[0][len(user[0])-1] != ForwardInChain {
		t.Errorf("DOCKER-USER: %q, want the jump before Docker's RETURN", user)
	}
	ops, reads, saves := f.ops, f.reads, f.saves
	if n, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil || n != 0 || f.ops != ops {
		t.Errorf("second Ensure: %d changes, %d ops, %v; want none", n, f.ops-ops, err)
	}
	// The check of every resync: one save per table, nothing chain by chain.
	if f.reads != reads || f.saves != saves+2 {
		t.Errorf("second Ensure read %d chains and saved %d tables; want 0 and 2", f.reads-reads, f.saves-saves)
	}
}

// TestEnsureRepairs: rules deleted, reordered or added by someone else,
// and a flushed chain, are put back; nothing still right is touched.
func TestEnsureRepairs(t *testing.T) {
	o := Options{Masquerade: true, Forward: true}
	ipt, f := newFakeIPTables(t, o)
	if _, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil {
		t.Fatal(err)
	}
	want := Rules(testNetwork, testSubnet, testIngress, o)
	nat := want[0]
	f.chains["nat/"+MasqChain] = [][]string{nat.Rules[0], nat.Rules[3], {"-j", "ACCEPT"}, nat.Rules[4]} // 1 and 2 lost, junk added
	f.chains["filter/"+ForwardChain] = [][]string{}                                                     // flushed
	f.chains["filter/FORWARD"] = nil                                                                    // jump deleted
	f.keep = map[string][][]string{"nat/" + MasqChain: {nat.Rules[0], nat.Rules[3], nat.Rules[4]}}
	n, err := ipt.Ensure(testNetwork, testSubnet, testIngress)
	if err != nil || n == 0 {
		t.Fatalf("Ensure: %d changes, %v", n, err)
	}
	wantInPlace(t, f, testNetwork, testSubnet, o)
}

// TestEnsureNewLeaseWithoutGap: a restart onto another subnet rewrites the
// rules in place; the ones of the network alone never go missing.
func TestEnsureNewLeaseWithoutGap(t *testing.T) {
	o := Options{Masquerade: true, Forward: true}
	ipt, f := newFakeIPTables(t, o)
	if _, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil {
		t.Fatal(err)
	}
	old := Rules(testNetwork, testSubnet, testIngress, o)
	f.keep = map[string][][]string{
		"nat/" + MasqChain:       {old[0].Rules[3], old[0].Rules[4]},
		"filter/" + ForwardChain: old[1].Rules,
		"nat/POSTROUTING":        {old[0].Jump},
		"filter/FORWARD":         {old[1].Jump},
		"filter/DOCKER-USER":     {old[2].Jump},
	}
	next := netip.MustParsePrefix("100.96.7.0/24")
	if _, err := ipt.Ensure(testNetwork, next, testIngress); err != nil {
		t.Fatal(err)
	}
	wantInPlace(t, f, testNetwork, next, o)
}

func TestEnsureRemovesDisabledAndRemove(t *testing.T) {
	both := Options{Masquerade: true, Forward: true}
	ipt, f := newFakeIPTables(t, both)
	if _, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil {
		t.Fatal(err)
	}
	ipt.opts.Masquerade = false // a restart without --ip-masq
	if _, err := ipt.Ensure(testNetwork, testSubnet, testIngress); err != nil {
		t.Fatal(err)
	}
	if _, ok := f.chains["nat/"+MasqChain]; ok || len(f.chains["nat/POSTROUTING"]) != 0 {
		t.Errorf("masquerading left behind: %q", f.chains)
	}
	wantInPlace(t, f, testNetwork, testSubnet, ipt.opts)
	if err := ipt.Remove(); err != nil {
		t.Fatal(err)
	}
	// DOCKER-USER stays, as Docker's own, without the jump.
	if len(f.chains) != 3 || len(f.chains["filter/FORWARD"]) != 0 || len(f.chains["filter/"+DockerUserChain]) != 0 {
		t.Errorf("after Remove: %q", f.chains)
	}
	if err := ipt.Remove(); err != nil {
		t.Errorf("second Remove: %v", err)
	}
}

func TestSplitQuoted(t *testing.T) {
	got, err := splitQuoted(`-A X ! -s 1.2.3.0/24 -m comment --comment "overlayd \"masq\"" -j RETURN`)
	want := []string{"-A", "X", "!", "-s", "1.2.3.0/24", "-m", "comment", "--comment", `overlayd "masq"`, "-j", "RETURN"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	if _, err := splitQuoted(`-A X --comment "open`); err == nil {
		t.Error("unterminated quote accepted")
	}
}

func TestDetect(t *testing.T) {
	defer func(l func(string) (string, error), c func(string) (int, error)) { lookPath, countRules = l, c }(lookPath, countRules)
	all := []string{"iptables-nft", "iptables-legacy", "iptables"}
	cases := []struct {
		name       string
		installed  []string
		plainIs    string // what iptables links to
		nft, leg   int
		want, path string
	}{
		{"none", nil, "", 0, 0, "", ""},
		{"only nft", []string{"iptables-nft"}, "", 0, 0, BackendNFT, "iptables-nft"},
		{"only legacy", []string{"iptables-legacy"}, "", 0, 0, BackendLegacy, "iptables-legacy"},
		{"before 1.8", []string{"iptables"}, "", 0, 0, BackendLegacy, "iptables"},
		{"legacy has rules", all, "xtables-nft-multi", 0, 12, BackendLegacy, "iptables-legacy"},
		{"nft has rules", all, "xtables-legacy-multi", 7, 2, BackendNFT, "iptables-nft"},
		{"tie: iptables is nft", all, "xtables-nft-multi", 0, 0, BackendNFT, "iptables-nft"},
		{"tie: iptables is legacy", all, "xtables-legacy-multi", 3, 3, BackendLegacy, "iptables-legacy"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.plainIs != "" {
				if err := os.WriteFile(filepath.Join(dir, tc.plainIs), nil, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.Symlink(tc.plainIs, filepath.Join(dir, "iptables")); err != nil {
					t.Fatal(err)
				}
			}
			lookPath = func(name string) (string, error) {
				if slices.Contains(tc.installed, name) {
					return dir + "/" + name, nil
				}
				return "", errors.New("not found")
			}
			countRules = func(save string) (int, error) {
				if strings.Contains(filepath.Base(save), "legacy") {
					return tc.leg, nil
				}
				return tc.nft, nil
			}
			b, err := Detect()
			if tc.want == "" {
				if !errors.Is(err, ErrNoIPTables) || !strings.Contains(err.Error(), "apt-get install iptables") {
					t.Errorf("got %+v, %v; want ErrNoIPTables naming the package", b, err)
				}
				return
			}
			if err != nil || b.Name != tc.want || b.Path != dir+"/"+tc.path {
				t.Errorf("got %+v, %v; want %s at %s", b, err, tc.want, tc.path)
			}
		})
	}
}
