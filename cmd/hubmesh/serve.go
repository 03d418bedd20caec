package main

import (
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/hubmesh/hubmesh/build"
	"github.com/hubmesh/hubmesh/mesh"
	"github.com/hubmesh/hubmesh/node"
)

// setting ties one flag to its environment twin and to the node.Config
// field it sets. The env name is derived from the flag name:
// --http-addr <-> HUBMESH_HTTP_ADDR.
type setting struct {
	flag  string
	usage string
	get   func(*node.Config) string
	set   func(*node.Config, string) error
}

var serveSettings = []setting{
	{"data-dir", "directory for all state of the node",
		func(c *node.Config) string { return c.DataDir },
		func(c *node.Config, v string) error { c.DataDir = v; return nil }},
	{"http-addr", "HTTP listen address host:port (port 0 picks a free port)",
		func(c *node.Config) string { return c.HTTPAddr },
		func(c *node.Config, v string) error { c.HTTPAddr = v; return nil }},
	{"p2p-addr", "libp2p listen multiaddrs, comma separated (TCP and QUIC)",
		func(c *node.Config) string { return strings.Join(c.P2PAddrs, ",") },
		func(c *node.Config, v string) error { c.P2PAddrs = splitList(v); return nil }},
	{"addr-file", `write {"http","p2p","peer_id"} here once serving`,
		func(c *node.Config) string { return c.AddrFile },
		func(c *node.Config, v string) error { c.AddrFile = v; return nil }},
	{"join", "URL of any member of the cluster to join (first start only)",
		func(c *node.Config) string { return c.Join },
		func(c *node.Config, v string) error { c.Join = v; return nil }},
	{"join-token", "token from `hubmesh cluster join-token`",
		func(c *node.Config) string { return c.JoinToken },
		func(c *node.Config, v string) error { c.JoinToken = v; return nil }},
	{"join-token-file", "read the join token from this file, waiting for it to appear",
		func(c *node.Config) string { return c.JoinTokenFile },
		func(c *node.Config, v string) error { c.JoinTokenFile = v; return nil }},
	{"write-join-token", "once the cluster is up, write a voter join token (valid 24h) to this file",
		func(c *node.Config) string { return c.WriteJoinToken },
		func(c *node.Config, v string) error { c.WriteJoinToken = v; return nil }},
	{"role", "voter, or mirror (a Raft non-voter that never holds up quorum)",
		func(c *node.Config) string { return c.Role },
		func(c *node.Config, v string) error { c.Role = v; return nil }},
	{"sync", "mirror sync policy: keep the blobs of images matching REPOSITORY[:TAG] globs (e.g. 'acme/*:v*', 'library/*') local as they are pushed; env comma separated",
		func(c *node.Config) string { return strings.Join(c.Sync, ",") },
		func(c *node.Config, v string) error { c.Sync = splitList(v); return nil }},
	{"upstream", "pull-through cache of an external registry, NAME=URL (e.g. docker.io=https://registry-1.docker.io); /v2/NAME/... maps to it, and the default upstream (docker.io, else the first) serves repositories missing here; env comma separated",
		func(c *node.Config) string { return strings.Join(c.Upstreams, ",") },
		func(c *node.Config, v string) error { c.Upstreams = splitList(v); return nil }},
	{"upstream-credentials-file", "YAML file of --upstream and --federate credentials: NAME: {username: U, password: P}",
		func(c *node.Config) string { return c.UpstreamCredentialsFile },
		func(c *node.Config, v string) error { c.UpstreamCredentialsFile = v; return nil }},
	{"upstream-ttl", "how long a cached upstream tag is served before it is checked again",
		func(c *node.Config) string { return c.UpstreamTTL.String() },
		func(c *node.Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration such as 5m", v)
			}
			c.UpstreamTTL = d
			return nil
		}},
	{"federate", "mirror namespaces of another mesh (or OCI registry), NAME=URL (e.g. hub-a=https://hub-a:5000); its account there comes from --upstream-credentials-file under NAME; env comma separated",
		func(c *node.Config) string { return strings.Join(c.Federate, ",") },
		func(c *node.Config, v string) error { c.Federate = splitList(v); return nil }},
	{"federate-namespaces", "namespaces a --federate link mirrors, NAME=NS[,NS...] (e.g. hub-a=alice,acme); env comma separated",
		func(c *node.Config) string { return strings.Join(c.FederateNamespaces, ",") },
		func(c *node.Config, v string) error { c.FederateNamespaces = splitList(v); return nil }},
	{"federate-secret-file", "YAML file of federation webhook secrets, NAME: SECRET; the other mesh's push webhooks to /api/v1/federation/NAME/hook must be signed with it",
		func(c *node.Config) string { return c.FederateSecretFile },
		func(c *node.Config, v string) error { c.FederateSecretFile = v; return nil }},
	{"federate-interval", "how often the leader sweeps every --federate link",
		func(c *node.Config) string { return c.FederateInterval.String() },
		func(c *node.Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration such as 1m", v)
			}
			c.FederateInterval = d
			return nil
		}},
	{"replicas", "replication factor R: a push is acknowledged once its blobs are on min(R, voters) nodes",
		func(c *node.Config) string { return strconv.Itoa(c.Replicas) },
		func(c *node.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a number", v)
			}
			c.Replicas = n
			return nil
		}},
	{"repair-after", "how long a node may stay unreachable before its blobs are copied to other nodes",
		func(c *node.Config) string { return c.RepairAfter.String() },
		func(c *node.Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration such as 5m", v)
			}
			c.RepairAfter = d
			return nil
		}},
	{"admin-password-file", "password of the first administrator, admin, when this node bootstraps a cluster (else one is generated and logged once)",
		func(c *node.Config) string { return c.AdminPasswordFile },
		func(c *node.Config, v string) error { c.AdminPasswordFile = v; return nil }},
	{"auth-service", "service name of the registry token service (token audience, service= in challenges)",
		func(c *node.Config) string { return c.AuthService },
		func(c *node.Config, v string) error { c.AuthService = v; return nil }},
	{"webhook-allow-cidrs", "address ranges webhooks may reach despite the egress policy (which refuses loopback, private and link-local), comma separated",
		func(c *node.Config) string { return strings.Join(c.WebhookAllowCIDRs, ",") },
		func(c *node.Config, v string) error { c.WebhookAllowCIDRs = splitList(v); return nil }},
	{"webhook-max-failures", "disable a webhook after this many consecutive failed deliveries (0: never)",
		func(c *node.Config) string { return strconv.Itoa(c.WebhookMaxFailures) },
		func(c *node.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a number", v)
			}
			c.WebhookMaxFailures = n
			return nil
		}},
	{"builder", "run automated builds on this node with the Docker daemon of --builder-docker-host (--builder alone means true)",
		func(c *node.Config) string { return strconv.FormatBool(c.Builder) },
		func(c *node.Config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("%q is not true or false", v)
			}
			c.Builder = b
			return nil
		}},
	{"builder-docker-host", "Docker Engine API of the builder, unix:///path/docker.sock or tcp://host:port (default: DOCKER_HOST, else the local socket)",
		func(c *node.Config) string { return c.BuilderDockerHost },
		func(c *node.Config, v string) error { c.BuilderDockerHost = v; return nil }},
	{"builder-concurrency", "how many builds the builder runs at once",
		func(c *node.Config) string { return strconv.Itoa(c.BuilderConcurrency) },
		func(c *node.Config, v string) error {
			n, err := strconv.Atoi(v)
			if err != nil {
				return fmt.Errorf("%q is not a number", v)
			}
			c.BuilderConcurrency = n
			return nil
		}},
	{"builder-registry", "host:port of this node's registry as the builder's Docker daemon reaches it (default: the HTTP address, 127.0.0.1 for an unspecified host)",
		func(c *node.Config) string { return c.BuilderRegistry },
		func(c *node.Config, v string) error { c.BuilderRegistry = v; return nil }},
	{"build-lease", "how long a claimed build stays with its builder without a heartbeat; a dead builder's builds go to another builder after it",
		func(c *node.Config) string { return c.BuildLease.String() },
		func(c *node.Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration such as 30s", v)
			}
			c.BuildLease = d
			return nil
		}},
	{"build-timeout", "longest a build may run before it fails",
		func(c *node.Config) string { return c.BuildTimeout.String() },
		func(c *node.Config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("%q is not a duration such as 1h", v)
			}
			c.BuildTimeout = d
			return nil
		}},
	{"log-level", "debug, info, warn or error",
		func(c *node.Config) string { return c.LogLevel },
		func(c *node.Config, v string) error { c.LogLevel = v; return nil }},
	{"log-format", "auto (text on a terminal, else json), text or json",
		func(c *node.Config) string { return c.LogFormat },
		func(c *node.Config, v string) error { c.LogFormat = v; return nil }},
}

func envName(flag string) string {
	return "HUBMESH_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok {
		return v
	}
	return def
}

func splitList(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func newServeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run a hubmesh node",
		Long: "Run a hubmesh node: a full container registry that keeps its metadata in Raft.\n" +
			"Precedence: defaults < --config file < HUBMESH_* environment < flags.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadServeConfig(cmd.Flags())
			if err != nil {
				return err
			}
			return serve(cmd, cfg)
		},
	}
	def := serveDefaults()
	f := cmd.Flags()
	f.String("config", "", "YAML config file (env "+envName("config")+")")
	for _, s := range serveSettings {
		addSettingFlag(f, s, s.get(&def), s.usage+" (env "+envName(s.flag)+")")
		if boolSettings[s.flag] {
			f.Lookup(s.flag).NoOptDefVal = "true"
		}
	}
	return cmd
}

// boolSettings are the serve settings that are switches: the flag alone
// means true (--builder), and --builder=false turns it off.
var boolSettings = map[string]bool{"builder": true}

// serveDefaults are node.Default with the defaults that main takes from
// the environment: the builder's Docker host from DOCKER_HOST.
func serveDefaults() node.Config {
	cfg := node.Default()
	cfg.BuilderDockerHost = build.EngineHostFromEnv()
	return cfg
}

// loadServeConfig applies defaults, then the config file, then the
// environment, then the flags that were given. Every problem is reported
// at once by Validate.
func loadServeConfig(flags *pflag.FlagSet) (node.Config, error) {
	cfg := serveDefaults()
	path, _ := flags.GetString("config")
	if !flags.Changed("config") {
		path = os.Getenv(envName("config"))
	}
	if path != "" {
		if err := cfg.LoadFile(path); err != nil {
			return cfg, err
		}
	}
	for _, s := range serveSettings {
		if v, ok := os.LookupEnv(envName(s.flag)); ok && !flags.Changed(s.flag) {
			if err := s.set(&cfg, v); err != nil {
				return cfg, fmt.Errorf("%s: %w", envName(s.flag), err)
			}
		}
		if flags.Changed(s.flag) {
			v := settingFlag(flags, s.flag)
			if err := s.set(&cfg, v); err != nil {
				return cfg, usageError{fmt.Errorf("--%s: %w", s.flag, err)}
			}
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, usageError{oneLine(err)}
	}
	return cfg, nil
}

// oneLine joins the lines of a multi-error so the CLI prints one line.
func oneLine(err error) error {
	return fmt.Errorf("%s", strings.ReplaceAll(err.Error(), "\n", "; "))
}

func serve(cmd *cobra.Command, cfg node.Config) error {
	logger := newLogger(cfg)
	mesh.SetLibp2pLogger(logger.With("component", "libp2p"))
	mesh.SetExchangeLogger(logger.With("component", "bitswap"))
	ctx := cmd.Context()
	n, err := node.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	runErr := n.Run(ctx)
	closeErr := n.Close()
	if runErr != nil {
		return runErr
	}
	if closeErr != nil {
		return fmt.Errorf("close: %w", closeErr)
	}
	logger.Info("stopped")
	return nil
}

func newLogger(cfg node.Config) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel)) // validated already
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" {
		format = "json"
		if fi, err := os.Stderr.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
			format = "text"
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewJSONHandler(os.Stderr, opts))
}
