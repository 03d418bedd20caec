package main

import (
	"fmt"
	"net/url"
	"strconv"

	"github.com/spf13/cobra"
)

// Search limits: --limit defaults to docker search's 25; one page of the
// API holds at most 100 results, and the CLI follows the next links for
// more, up to maxSearchLimit.
const (
	defaultSearchLimit = 25
	searchPageSize     = 100
	maxSearchLimit     = 10000
)

// searchResult is one result of GET /api/v1/search (Docker Hub's names).
type searchResult struct {
	RepoName         string `json:"repo_name"`
	Namespace        string `json:"namespace"`
	Name             string `json:"name"`
	ShortDescription string `json:"short_description"`
	StarCount        int64  `json:"star_count"`
	PullCount        int64  `json:"pull_count"`
	IsOfficial       bool   `json:"is_official"`
	IsAutomated      bool   `json:"is_automated"`
	IsPrivate        bool   `json:"is_private"`
}

// searchOptions are the filters of `hubmesh search`; a nil flag is not
// sent.
type searchOptions struct {
	term                string
	official, automated *bool
	minStars            int64
	namespace           string
	limit               int
}

// path is the API request for the first page of results. Keys come out
// sorted (url.Values.Encode), so the request is the same for the same
// options.
func (o searchOptions) path() string {
	q := url.Values{"q": {o.term}, "page_size": {strconv.Itoa(min(o.limit, searchPageSize))}}
	if o.official != nil {
		q.Set("is_official", strconv.FormatBool(*o.official))
	}
	if o.automated != nil {
		q.Set("is_automated", strconv.FormatBool(*o.automated))
	}
	if o.minStars > 0 {
		q.Set("min_stars", strconv.FormatInt(o.minStars, 10))
	}
	if o.namespace != "" {
		q.Set("namespace", o.namespace)
	}
	return "/api/v1/search?" + q.Encode()
}

var searchHeader = []string{"NAME", "DESCRIPTION", "STARS", "PULLS", "OFFICIAL", "AUTOMATED"}

func searchRows(rs []searchResult) [][]string {
	rows := make([][]string, len(rs))
	for i, r := range rs {
		name := r.RepoName
		if r.IsPrivate {
			name += " (private)"
		}
		rows[i] = []string{name, orDash(r.ShortDescription), strconv.FormatInt(r.StarCount, 10),
			strconv.FormatInt(r.PullCount, 10), yesNo(r.IsOfficial), yesNo(r.IsAutomated)}
	}
	return rows
}

func newSearchCmd() *cobra.Command {
	var (
		opts                searchOptions
		official, automated bool
	)
	cmd := showCmd(&cobra.Command{
		Use:   "search [TERM]",
		Short: "Search the repositories of the whole mesh",
		Long: "Search repositories by name and description, best match first: exact name, then prefix\n" +
			"and word matches, boosted by stars and pulls, official repositories first among equals.\n" +
			"Private repositories show only to those who may pull them. Without TERM, every repository\n" +
			"the filters keep.",
		Example: "  hubmesh search postgres --limit 10\n" +
			"  hubmesh search api --namespace acme --stars 3\n" +
			"  hubmesh search --official --json",
		Args: rangeArgs(0, 1, "at most one search term"),
	}, func(cmd *cobra.Command, args []string) error {
		if len(args) == 1 {
			opts.term = args[0]
		}
		if opts.limit < 1 || opts.limit > maxSearchLimit {
			return usageError{fmt.Errorf("--limit %d: want 1 to %d", opts.limit, maxSearchLimit)}
		}
		if opts.minStars < 0 {
			return usageError{fmt.Errorf("--stars %d: want 0 or more", opts.minStars)}
		}
		if cmd.Flags().Changed("official") {
			opts.official = &official
		}
		if cmd.Flags().Changed("automated") {
			opts.automated = &automated
		}
		return nil
	}, func(cmd *cobra.Command, c *apiClient, _ []string) (shown, error) {
		rs, err := listAll[searchResult](cmd.Context(), c, opts.path(), opts.limit)
		if rs == nil {
			rs = []searchResult{}
		}
		return shown{rs, searchHeader, func() [][]string { return searchRows(rs) }}, err
	})
	cmd.Flags().BoolVar(&official, "official", false, "only official repositories (--official=false: only the others)")
	cmd.Flags().BoolVar(&automated, "automated", false, "only automated builds (--automated=false: only the others)")
	cmd.Flags().Int64Var(&opts.minStars, "stars", 0, "only repositories with at least this many stars")
	cmd.Flags().StringVar(&opts.namespace, "namespace", "", "only repositories of this namespace")
	cmd.Flags().IntVar(&opts.limit, "limit", defaultSearchLimit, "at most this many results")
	return cmd
}
