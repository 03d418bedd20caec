package main

import (
	"strings"

	"github.com/hubmesh/hubmesh/bench/internal/stats"
)

// prefaultFlag is -prefault: "auto", "0" (off) or a size. See proc.Prefault
// for why the harness touches memory before measuring.
type prefaultFlag struct {
	auto bool
	size stats.ByteSize
}

func (p *prefaultFlag) String() string {
	if p.auto {
		return "auto"
	}
	return p.size.String()
}

func (p *prefaultFlag) Set(s string) error {
	if strings.TrimSpace(s) == "auto" {
		*p = prefaultFlag{auto: true}
		return nil
	}
	*p = prefaultFlag{}
	return p.size.Set(s)
}
