package main

import (
	"context"
	"strings"

	"github.com/overlayd/overlayd/subnet/etcd"
)

// runEtcd serves an embedded single-node etcd until interrupted.
func runEtcd(ctx context.Context, args []string) error {
	fs := newFlagSet("etcd")
	var (
		lf                  logFlags
		name, dataDir, peer string
		listen, advertise   string
	)
	lf.register(fs)
	fs.StringVar(&name, "name", "overlayd", "member name")
	fs.StringVar(&dataDir, "data-dir", "/var/lib/overlayd/etcd", "directory of the etcd data")
	fs.StringVar(&listen, "listen-client-urls", "http://127.0.0.1:2379", "comma-separated URLs to serve clients on")
	fs.StringVar(&advertise, "advertise-client-urls", "", "comma-separated client URLs to advertise (default: the listen URLs)")
	fs.StringVar(&peer, "listen-peer-url", "http://127.0.0.1:2380", "URL for peer traffic (single node: unused by others)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := lf.logger()
	if err != nil {
		return err
	}
	if advertise == "" {
		advertise = listen
	}
	e, err := etcd.StartEmbedded(ctx, etcd.EmbedOptions{
		Name: name, DataDir: dataDir,
		ListenClientURLs:    strings.Split(listen, ","),
		AdvertiseClientURLs: strings.Split(advertise, ","),
		ListenPeerURL:       peer,
		Logger:              log,
	})
	if err != nil {
		return err
	}
	// StartEmbedded logged "ready", with the endpoints.
	select {
	case <-ctx.Done():
	case err := <-e.Err():
		e.Close()
		return err
	}
	e.Close()
	log.Info("embedded etcd stopped", "data_dir", dataDir)
	return nil
}
