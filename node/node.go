package node

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/hubmesh/hubmesh/consensus"
	"github.com/hubmesh/hubmesh/mesh"
	"github.com/hubmesh/hubmesh/registryapi"
)

// Data directory layout:
//
//	<data-dir>/
//	  consensus/   raft log and stable store, FSM state, snapshots (consensus)
//	  blobs/       content-addressed blob store (mesh)
//	  uploads/     upload sessions in progress; wiped at start (mesh)
//	  p2p/         libp2p identity key (mesh)
const (
	dirConsensus = "consensus"
	dirBlobs     = "blobs"
	dirUploads   = "uploads"
	dirChunks    = "chunks"
)

// catchUpWait bounds how long a starting node waits to apply what the
// leader has committed before it reports ready.
const catchUpWait = 30 * time.Second

// shutdownTimeout bounds how long a graceful stop waits for requests in
// flight before closing their connections.
const shutdownTimeout = 10 * time.Second

// Node is one running hubmesh node.
type Node struct {
	cfg Config
	log *slog.Logger

	ln      net.Listener
	srv     *http.Server
	host    *mesh.Host
	store   *mesh.Store
	uploads *mesh.Uploads
	ex      *mesh.Exchange
	meta    *consensus.Node
	blobs   *blobs
	cluster *cluster
	events  *eventBuffer
	search  *searchIndex
	pulls   *pullCounter
	hooks   *hookWorker
	fed     *federation  // nil without --federate
	leaders *leaderWatch // how long the node has been without a leader (offline.go)

	// buildLogs are the logs of builds running here; builder and poller
	// are nil without --builder (builds.go).
	buildLogs *buildLogs
	builder   *builder
	poller    *buildPoller

	// needJoin is set when the node has no state and --join was given.
	needJoin bool
	self     consensus.Member
	bg       context.Context // the node's lifetime, ended by Close
	stopBg   context.CancelFunc

	ready     atomic.Bool
	closeOnce sync.Once
	closeErr  error
	closers   []func() error // in opening order; Close runs them backwards
}

// New opens every part of a node: it checks the data directory, binds the
// HTTP listener, starts the libp2p host, opens the blob store and the Raft
// node (bootstrapping a one-voter cluster on first start), and builds the
// API. Nothing is served until Run. On error, whatever was opened is closed.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (_ *Node, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	n := &Node{cfg: cfg, log: logger}
	n.bg, n.stopBg = context.WithCancel(context.Background())
	n.closers = append(n.closers, func() error { n.stopBg(); return nil })
	defer func() {
		if err != nil {
			_ = n.Close()
		}
	}()

	if err := checkDataDir(cfg.DataDir); err != nil {
		return nil, err
	}
	n.ln, err = net.Listen("tcp", cfg.HTTPAddr)
	if err != nil {
		return nil, fmt.Errorf("http-addr: %w", err)
	}
	n.closers = append(n.closers, func() error {
		if err := n.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})

	n.host, err = mesh.NewHost(ctx, mesh.HostConfig{
		DataDir:     cfg.DataDir,
		ListenAddrs: cfg.P2PAddrs,
		Logger:      logger.With("component", "mesh"),
	})
	if err != nil {
		return nil, fmt.Errorf("p2p: %w", err)
	}
	n.closers = append(n.closers, n.host.Close)

	n.store, err = mesh.OpenStore(filepath.Join(cfg.DataDir, dirBlobs), logger.With("component", "blobs"))
	if err != nil {
		return nil, fmt.Errorf("blob store: %w", err)
	}
	n.uploads, err = mesh.NewUploads(filepath.Join(cfg.DataDir, dirUploads), n.store, logger.With("component", "uploads"))
	if err != nil {
		return nil, fmt.Errorf("uploads: %w", err)
	}

	n.ex, err = mesh.NewExchange(ctx, n.host, n.store, mesh.ExchangeConfig{
		IndexDir: filepath.Join(cfg.DataDir, dirChunks),
		Logger:   logger.With("component", "exchange"),
	})
	if err != nil {
		return nil, fmt.Errorf("blob exchange: %w", err)
	}
	n.closers = append(n.closers, n.ex.Close)
	n.uploads.IndexChunks(n.ex)

	n.self = consensus.Member{ID: n.host.ID(), HTTP: advertisedHTTP(n.ln), P2P: n.host.Addrs(), Role: roleOf(cfg.Role)}
	n.meta, err = consensus.Open(ctx, consensus.Config{
		Dir:           filepath.Join(cfg.DataDir, dirConsensus),
		NodeID:        n.host.ID(),
		Address:       n.host.ID(),
		StreamLayer:   n.host.StreamLayer(),
		RPC:           n.host,
		Self:          n.self,
		SkipBootstrap: cfg.Join != "",
		Local: func(d digest.Digest) bool {
			_, err := n.store.Stat(n.bg, d)
			return err == nil
		},
		Logger: logger.With("component", "consensus"),
	})
	if err != nil {
		return nil, fmt.Errorf("consensus: %w", err)
	}
	n.closers = append(n.closers, n.meta.Close)
	n.leaders = &leaderWatch{leader: func() string { id, _ := n.meta.Leader(); return id }, now: time.Now}
	n.needJoin = cfg.Join != "" && n.meta.Stats().LastLogIndex == 0
	n.host.Handle(consensus.RPCProtocol, n.meta.HandleRPC)

	n.blobs = &blobs{
		bg:   n.bg,
		self: n.host.ID(), replicas: cfg.Replicas, store: n.store, ex: n.ex, host: n.host, meta: n.meta,
		log: logger.With("component", "replication"),
	}
	n.host.Handle(blobProtocol, n.blobs.serveRPC)
	n.buildLogs = newBuildLogs(filepath.Join(cfg.DataDir, dirBuilds))
	n.host.Handle(buildLogProtocol, n.buildLogs.serveRPC)

	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		newNodeCollector(n.meta, n.store),
	)
	n.events = newEventBuffer(n.meta, n.host.ID(), logger.With("component", "audit"))
	n.search = newSearchIndex(n.meta, logger.With("component", "search"))
	n.pulls = newPullCounter(n.meta, logger.With("component", "pulls"))
	eg, err := newEgress(cfg.WebhookAllowCIDRs)
	if err != nil {
		return nil, err
	}
	n.hooks = newHookWorker(n.meta, n.events, eg, "http://"+n.self.HTTP, cfg.WebhookMaxFailures, logger.With("component", "webhooks"))
	up, err := newUpstreams(cfg, n.meta, n.blobs, n.bg, logger.With("component", "upstream"))
	if err != nil {
		return nil, err
	}
	fed, err := newFederation(cfg, n.meta, n.store, logger.With("component", "federation"))
	if err != nil {
		return nil, err
	}
	var fedHooks registryapi.Federation
	if fed != nil { // federation.go
		fed.replicate = n.blobs.replicateSoon
		fedHooks = fed
	}
	n.fed = fed
	var (
		ids       registryapi.Identities = n.meta
		manifests registryapi.Manifests  = actorManifests{durableManifests{Node: n.meta, blobs: n.blobs}}
		links     registryapi.BlobLinks  = replicatingLinks{Node: n.meta, blobs: n.blobs, bg: n.bg}
	)
	if up != nil { // pull-through cache (upstream.go)
		ids, manifests, links = cachingIdentities{ids, up}, cachingManifests{manifests, up}, cachingLinks{links, up}
	}
	access, err := registryapi.NewAuth(registryapi.AuthConfig{
		Identities: ids,
		ClusterID: func() string {
			info, _ := n.meta.Cluster()
			return info.ID
		},
		Service: cfg.AuthService,
		Events:  n.events,
		Builds:  localBuildSettings{n.meta},
		Logger:  logger.With("component", "auth"),
	})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	if cfg.Builder {
		if err := n.setUpBuilder(ctx, access, logger); err != nil {
			return nil, err
		}
	}
	api, err := registryapi.New(registryapi.Config{
		Manifests:  manifests,
		Listings:   n.meta,
		Links:      links,
		Blobs:      n.blobs,
		Uploads:    uploadsAdapter{n.uploads},
		Auth:       access,
		Stats:      n.pulls,
		Logger:     logger.With("component", "api"),
		Registerer: reg,
	})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}

	n.cluster = &cluster{meta: n.meta, host: n.host, store: n.store, log: logger.With("component", "cluster"), now: time.Now}
	clusterAPI, err := registryapi.NewClusterHandler(n.cluster, logger.With("component", "api"), registryapi.WithAdminAuth(access))
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	tokens, err := registryapi.NewTokenHandler(access)
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}
	hub, err := registryapi.NewHub(registryapi.HubConfig{
		Auth: access, Accounts: actorAccounts{n.meta}, Listings: n.meta, Logger: logger.With("component", "api"),
		Search: n.search, Social: n.meta, Manifests: n.meta, Blobs: n.blobs,
		Webhooks: n.meta, WebhookURLCheck: eg.checkURL, Federation: fedHooks,
		Builds: &buildsAPI{
			Node: n.meta, self: n.host.ID(), logs: n.buildLogs, blobs: n.blobs, host: n.host, recheck: buildLogRecheck,
		},
	})
	if err != nil {
		return nil, fmt.Errorf("api: %w", err)
	}

	mux := http.NewServeMux()
	mux.Handle("/v2/", n.refuseWritesOffline(api))
	mux.Handle("/token", tokens)
	mux.Handle("/api/v1/", n.refuseWritesOffline(hub))
	mux.Handle("/v1/", hub)
	mux.Handle("/api/v1/cluster/", clusterAPI)
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	mux.HandleFunc("GET /healthz", n.serveHealthz)
	mux.HandleFunc("GET /readyz", n.serveReadyz)
	n.srv = &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
	return n, nil
}

// checkDataDir creates dir if needed and proves it is writable, so that a
// bad data directory fails at start with one clear line.
func checkDataDir(dir string) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return fmt.Errorf("data-dir %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, ".write-check-*")
	if err != nil {
		return fmt.Errorf("data-dir %s is not writable: %w", dir, errors.Unwrap(err))
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Run serves until ctx ends or a service fails, then stops serving
// gracefully. The addr file is written once the node has a leader and
// answers requests. Call Close afterwards.
func (n *Node) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := n.srv.Serve(n.ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http: %w", err)
		}
		return nil
	})
	g.Go(func() error { return n.uploads.Run(gctx) })
	g.Go(func() error { return syncMembers(gctx, n.meta, n.host, n.log) })
	g.Go(func() error { return n.events.Run(gctx) })
	g.Go(func() error { return n.search.Run(gctx) })
	g.Go(func() error { return n.pulls.Run(gctx) })
	g.Go(func() error { return n.hooks.Run(gctx) })
	g.Go(func() error { return n.fed.Run(gctx) })
	g.Go(func() error { return n.watchLeader(gctx) })
	g.Go(func() error {
		policy, _ := parseSyncPolicy(n.cfg.Sync) // checked by Validate
		return newSyncer(policy, n.meta, n.blobs, n.log.With("component", "sync")).Run(gctx)
	})
	g.Go(func() error {
		r := &repairer{
			blobs: n.blobs, meta: n.meta, host: n.host, after: n.cfg.RepairAfter,
			interval: min(n.cfg.RepairAfter/2, 30*time.Second), log: n.log.With("component", "repair"),
		}
		return r.Run(gctx)
	})
	g.Go(func() error {
		if n.needJoin {
			if n.cfg.JoinToken == "" {
				tok, err := readTokenFile(gctx, n.cfg.JoinTokenFile)
				if err != nil {
					n.shutdown()
					return err
				}
				n.cfg.JoinToken = tok
			}
			if err := joinCluster(gctx, n.cfg, n.self, n.host); err != nil {
				n.shutdown()
				return err
			}
			n.log.Info("joined cluster", "via", n.cfg.Join)
		}
		if err := n.meta.WaitLeader(gctx); err != nil {
			if gctx.Err() != nil {
				return n.shutdown()
			}
			return err
		}
		if err := n.waitClusterInfo(gctx); err != nil {
			return n.shutdown()
		}
		if n.cfg.Join == "" {
			// This node bootstrapped the cluster: it creates the first
			// administrator and signing key (once; a restart finds them).
			if err := n.bootstrapAccounts(gctx, n.meta, n.cfg.AdminPasswordFile); err != nil {
				if gctx.Err() != nil {
					return n.shutdown()
				}
				n.shutdown()
				return err
			}
		}
		// A restarted node catches up before it calls itself ready, so
		// that it does not answer from a state it knows is behind.
		cctx, cancel := context.WithTimeout(gctx, catchUpWait)
		if err := n.meta.ReadBarrier(cctx); err != nil && gctx.Err() == nil {
			n.log.Warn("not caught up with the leader; serving anyway", "err", err)
		}
		cancel()
		n.ready.Store(true)
		addrs := n.Addrs()
		if n.cfg.AddrFile != "" {
			if err := writeAddrFile(n.cfg.AddrFile, addrs); err != nil {
				return err
			}
		}
		n.log.Info("serving", "http", addrs.HTTP, "p2p", addrs.P2P, "peer_id", addrs.PeerID)
		if n.builder != nil {
			// Builds start once the node serves: the builder pushes here.
			g.Go(func() error { return n.builder.Run(gctx) })
			g.Go(func() error { return n.poller.Run(gctx) })
		}
		if n.cfg.WriteJoinToken != "" {
			g.Go(func() error {
				if err := n.cluster.writeTokenFile(gctx, n.cfg.WriteJoinToken); err != nil {
					n.log.Error("join token file", "err", err)
				}
				return nil
			})
		}
		<-gctx.Done()
		return n.shutdown()
	})
	err := g.Wait()
	if err != nil && ctx.Err() != nil && errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// waitClusterInfo waits until the cluster identity (proposed by the first
// leader right after bootstrap, or replicated to a joiner) is applied
// here, so that a node that reports ready can issue join tokens.
func (n *Node) waitClusterInfo(ctx context.Context) error {
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, ok := n.meta.Cluster(); ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

func (n *Node) shutdown() error {
	n.ready.Store(false)
	n.log.Info("stopping")
	ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if err := n.srv.Shutdown(ctx); err != nil {
		n.log.Warn("graceful stop cut short", "err", err)
		return n.srv.Close()
	}
	return nil
}

// Addrs reports where the node listens.
func (n *Node) Addrs() Addrs {
	return Addrs{HTTP: n.ln.Addr().String(), P2P: n.host.Addrs(), PeerID: n.host.ID()}
}

// Close releases everything New opened. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		for i := len(n.closers) - 1; i >= 0; i-- {
			errs = append(errs, n.closers[i]())
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

func (n *Node) serveHealthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
}

func (n *Node) serveReadyz(w http.ResponseWriter, _ *http.Request) {
	st := n.meta.Stats()
	ready := n.ready.Load() && st.LeaderID != ""
	w.Header().Set("Content-Type", "application/json")
	body := map[string]any{"ready": ready, "raft_state": st.State, "leader": st.LeaderID}
	if n.offline() {
		// Cut off after serving: a mirror stays ready on what it holds.
		body["offline"], body["reason"] = true, offlineReason
		ready = n.cfg.Role == "mirror"
		body["ready"] = ready
	}
	if !ready {
		if _, ok := body["reason"]; !ok {
			body["reason"] = "no raft leader"
		}
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(body)
}
