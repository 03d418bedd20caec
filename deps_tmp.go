package hubmesh

import (
	_ "github.com/cockroachdb/pebble"
	_ "github.com/hashicorp/raft"
	_ "github.com/libp2p/go-libp2p"
	_ "github.com/opencontainers/go-digest"
	_ "github.com/opencontainers/image-spec/specs-go/v1"
	_ "github.com/spf13/cobra"
	_ "go.yaml.in/yaml/v3"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/google/uuid"
	_ "golang.org/x/sync/errgroup"
	_ "go.uber.org/goleak"
	_ "github.com/hashicorp/go-hclog"
)

