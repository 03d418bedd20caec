package main

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"

	"github.com/hubmesh/hubmesh"
)

// repoPath is the API path of a repository.
func repoPath(name string) string { return "/api/v1/repositories/" + escapePath(name) }

// checkRepoName refuses names that cannot be a repository.
func checkRepoName(name string) error {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return usageError{fmt.Errorf("repository %q: want NAMESPACE/NAME (or NAME)", name)}
	}
	return nil
}

// repoArg refuses a first argument that cannot be a repository.
func repoArg(_ *cobra.Command, args []string) error { return checkRepoName(args[0]) }

// repoCreateRequest is the body of POST /api/v1/repositories, in Docker
// Hub's shape: the namespace, and the name within it.
type repoCreateRequest struct {
	Namespace   string `json:"namespace"`
	Name        string `json:"name"`
	IsPrivate   bool   `json:"is_private"`
	Description string `json:"description,omitempty"`
}

// newRepoCreateRequest splits a full repository name for the API.
func newRepoCreateRequest(full string, private bool, desc string) repoCreateRequest {
	ns := hubmesh.RepoOf(full)
	name := full
	if ns != "" {
		name = full[len(ns)+1:]
	}
	return repoCreateRequest{Namespace: ns, Name: name, IsPrivate: private, Description: desc}
}

// repoUpdateRequest is the body of PATCH /api/v1/repositories/{name}.
type repoUpdateRequest struct {
	IsPrivate       *bool   `json:"is_private,omitempty"`
	Description     *string `json:"description,omitempty"`
	FullDescription *string `json:"full_description,omitempty"`
}

func newRepoCmd() *cobra.Command {
	return groupCmd("repo", "Manage repositories: visibility, descriptions, stars, tags, deletion",
		newRepoCreateCmd(), newRepoSetCmd(), newRepoLsCmd(), newRepoShowCmd(), newRepoRmCmd(),
		newRepoStarCmd("star", http.MethodPut, "Star a repository"),
		newRepoStarCmd("unstar", http.MethodDelete, "Take your star off a repository"),
		newRepoStarredCmd(), newRepoOfficialCmd(), newRepoTagsCmd())
}

// repoView is a repository as the API shows it (Docker Hub's shape: name
// is the part after the namespace).
type repoView struct {
	Namespace       string    `json:"namespace"`
	Name            string    `json:"name"`
	IsPrivate       bool      `json:"is_private"`
	Description     string    `json:"description"`
	FullDescription string    `json:"full_description"`
	DateRegistered  time.Time `json:"date_registered"`
	LastUpdated     time.Time `json:"last_updated"`
	IsOfficial      bool      `json:"is_official"`
	IsAutomated     bool      `json:"is_automated"`
	StarCount       int64     `json:"star_count"`
	PullCount       int64     `json:"pull_count"`
}

// FullName is namespace/name, as a registry reference names it.
func (r repoView) FullName() string {
	if r.Namespace == "" {
		return r.Name
	}
	return r.Namespace + "/" + r.Name
}

var repoHeader = []string{"NAME", "VISIBILITY", "OFFICIAL", "STARS", "PULLS", "UPDATED", "DESCRIPTION"}

func visibility(private bool) string {
	if private {
		return "private"
	}
	return "public"
}

func repoRows(rs []repoView) [][]string {
	rows := make([][]string, len(rs))
	for i, r := range rs {
		rows[i] = []string{r.FullName(), visibility(r.IsPrivate), yesNo(r.IsOfficial), strconv.FormatInt(r.StarCount, 10),
			strconv.FormatInt(r.PullCount, 10), when(r.LastUpdated), orDash(r.Description)}
	}
	return rows
}

func newRepoCreateCmd() *cobra.Command {
	var (
		private bool
		desc    string
	)
	cmd := requestCmd(&cobra.Command{
		Use:   "create NAME",
		Short: "Create a repository before its first push",
		Long: "Create a repository before its first push (a push creates it too), public unless\n" +
			"--private. NAME is NAMESPACE/NAME: your own namespace, or an organization you may write to.",
		Example: "  hubmesh repo create alice/secret --private",
		Args:    exactArgs(1, "one repository name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: http.MethodPost, path: "/api/v1/repositories", body: newRepoCreateRequest(args[0], private, desc), echo: true},
			checkRepoName(args[0])
	})
	cmd.Flags().BoolVar(&private, "private", false, "only users with read permission can see and pull it")
	cmd.Flags().StringVar(&desc, "description", "", "short description")
	return cmd
}

func newRepoSetCmd() *cobra.Command {
	var (
		private, public        bool
		desc, fullDesc, readme string
		descFlag, fullDescFlag = "description", "full-description"
	)
	cmd := requestCmd(&cobra.Command{
		Use:   "set NAME [--private|--public] [--description D] [--readme FILE]",
		Short: "Change a repository's visibility or descriptions",
		Long: "Change a repository's visibility, its short description (up to 100 characters) or its\n" +
			"full description (Markdown): --readme reads it from FILE ('-' for standard input),\n" +
			"--full-description takes it as an argument.",
		Example: "  hubmesh repo set alice/secret --private\n" +
			"  hubmesh repo set acme/api --public --description 'the API server' --readme README.md\n" +
			"  render-docs | hubmesh repo set acme/api --readme -",
		Args: exactArgs(1, "one repository name"),
	}, func(cmd *cobra.Command, args []string) (apiRequest, error) {
		if err := checkRepoName(args[0]); err != nil {
			return apiRequest{}, err
		}
		var upd repoUpdateRequest
		switch {
		case private && public:
			return apiRequest{}, usageError{fmt.Errorf("--private and --public exclude each other")}
		case private || public:
			upd.IsPrivate = &private
		}
		if cmd.Flags().Changed(descFlag) {
			upd.Description = &desc
		}
		switch {
		case cmd.Flags().Changed(fullDescFlag) && cmd.Flags().Changed("readme"):
			return apiRequest{}, usageError{fmt.Errorf("--full-description and --readme exclude each other")}
		case cmd.Flags().Changed(fullDescFlag):
			upd.FullDescription = &fullDesc
		case cmd.Flags().Changed("readme"):
			text, err := readReadme(cmd, readme)
			if err != nil {
				return apiRequest{}, err
			}
			upd.FullDescription = &text
		}
		if upd == (repoUpdateRequest{}) {
			return apiRequest{}, usageError{fmt.Errorf("repo set changes nothing: give --private, --public, --description, --readme or --full-description")}
		}
		return apiRequest{method: http.MethodPatch, path: repoPath(args[0]), body: upd}, nil
	})
	cmd.Flags().BoolVar(&private, "private", false, "make it private")
	cmd.Flags().BoolVar(&public, "public", false, "make it public: anyone may pull it")
	cmd.Flags().StringVar(&desc, descFlag, "", "short description (up to 100 characters)")
	cmd.Flags().StringVar(&fullDesc, fullDescFlag, "", "full description (Markdown)")
	cmd.Flags().StringVar(&readme, "readme", "", "file whose content becomes the full description ('-': standard input)")
	return cmd
}

// maxReadme bounds what --readme reads. The node enforces the real limit
// (64 KiB); this one only keeps a wrong file from being read whole.
const maxReadme = 1 << 20

// readReadme reads the full description from file, or from standard
// input when file is "-". It must be UTF-8 text: JSON would silently
// mangle anything else.
func readReadme(cmd *cobra.Command, file string) (string, error) {
	var (
		r    io.Reader
		name = file
	)
	switch file {
	case "":
		return "", usageError{fmt.Errorf("--readme needs a file name, or '-' for standard input")}
	case "-":
		r, name = cmd.InOrStdin(), "standard input"
	default:
		fh, err := os.Open(file)
		if err != nil {
			return "", fmt.Errorf("--readme: %w", err)
		}
		defer fh.Close()
		r = fh
	}
	b, err := io.ReadAll(io.LimitReader(r, maxReadme+1))
	if err != nil {
		return "", fmt.Errorf("--readme: read %s: %w", name, err)
	}
	if len(b) > maxReadme {
		return "", fmt.Errorf("--readme: %s is larger than %d KiB", name, maxReadme>>10)
	}
	if !utf8.Valid(b) {
		return "", fmt.Errorf("--readme: %s is not UTF-8 text", name)
	}
	return string(b), nil
}

func newRepoLsCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:     "ls [NAMESPACE]",
		Aliases: []string{"list"},
		Short:   "List the repositories you can see, or those of one namespace",
		Args:    rangeArgs(0, 1, "at most one namespace"),
	}, nil, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		path := "/api/v1/repositories"
		if len(args) == 1 {
			path += "?namespace=" + url.QueryEscape(args[0])
		}
		rs, err := listAll[repoView](cmd.Context(), c, path, 0)
		return shown{rs, repoHeader, func() [][]string { return repoRows(rs) }}, err
	})
}

// repoDetailRows is `repo show` as a table: one field a line. The full
// description shows as its length and first line.
func repoDetailRows(r repoView) [][]string {
	return [][]string{
		{"name", r.FullName()},
		{"visibility", visibility(r.IsPrivate)},
		{"official", yesNo(r.IsOfficial)},
		{"automated", yesNo(r.IsAutomated)},
		{"stars", strconv.FormatInt(r.StarCount, 10)},
		{"pulls", strconv.FormatInt(r.PullCount, 10)},
		{"registered", when(r.DateRegistered)},
		{"updated", when(r.LastUpdated)},
		{"description", orDash(r.Description)},
		{"full description", summary(r.FullDescription)},
	}
}

// summary is a long text in one line: its first non-blank line and its
// length, or "-" when empty.
func summary(s string) string {
	if strings.TrimSpace(s) == "" {
		return "-"
	}
	first := ""
	for l := range strings.Lines(s) {
		if first = strings.TrimSpace(l); first != "" {
			break
		}
	}
	const maxFirst = 60
	if r := []rune(first); len(r) > maxFirst {
		first = string(r[:maxFirst-3]) + "..."
	}
	return fmt.Sprintf("%s (%d characters)", first, utf8.RuneCountInString(s))
}

func newRepoShowCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "show NAME",
		Short: "Show a repository: visibility, official flag, stars, pulls and descriptions",
		Args:  exactArgs(1, "one repository name"),
	}, repoArg, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		var r repoView
		err := c.do(cmd.Context(), http.MethodGet, repoPath(args[0]), nil, &r)
		return shown{r, []string{"FIELD", "VALUE"}, func() [][]string { return repoDetailRows(r) }}, err
	})
}

func newRepoRmCmd() *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:     "rm NAME",
		Aliases: []string{"remove", "delete"},
		Short:   "Delete a repository: its tags, manifests and settings",
		Args:    exactArgs(1, "one repository name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: http.MethodDelete, path: repoPath(args[0])}, checkRepoName(args[0])
	})
}

func newRepoStarCmd(verb, method, short string) *cobra.Command {
	return requestCmd(&cobra.Command{
		Use:     verb + " NAME",
		Short:   short,
		Example: "  hubmesh repo " + verb + " acme/api",
		Args:    exactArgs(1, "one repository name"),
	}, func(_ *cobra.Command, args []string) (apiRequest, error) {
		return apiRequest{method: method, path: repoPath(args[0]) + "/stars"}, checkRepoName(args[0])
	})
}

func newRepoStarredCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "starred [USER]",
		Short: "List the repositories a user starred; without USER, the ones you starred",
		Args:  rangeArgs(0, 1, "at most one user name"),
	}, nil, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		var user string
		if len(args) == 1 {
			user = args[0]
		} else {
			var me userView
			if err := c.do(cmd.Context(), http.MethodGet, "/api/v1/user", nil, &me); err != nil {
				return shown{}, err
			}
			user = me.Username
		}
		rs, err := listAll[repoView](cmd.Context(), c, "/api/v1/users/"+url.PathEscape(user)+"/starred", 0)
		if rs == nil {
			rs = []repoView{}
		}
		return shown{rs, repoHeader, func() [][]string { return repoRows(rs) }}, err
	})
}

func newRepoOfficialCmd() *cobra.Command {
	var (
		ns    string
		unset bool
	)
	cmd := requestCmd(&cobra.Command{
		Use:   "official NAME | --namespace NS [--unset]",
		Short: "Flag a repository, or every repository of a namespace, official (administrators only)",
		Long: "Flag a repository official, or with --namespace every repository of a namespace, now and\n" +
			"later (such as library). Official repositories come first in searches. --unset takes the\n" +
			"flag away; a repository stays official while its namespace is.",
		Example: "  hubmesh repo official acme/api\n" +
			"  hubmesh repo official --namespace library\n" +
			"  hubmesh repo official acme/api --unset",
		Args: rangeArgs(0, 1, "one repository name, or none with --namespace"),
	}, func(cmd *cobra.Command, args []string) (apiRequest, error) {
		r := apiRequest{method: http.MethodPut}
		if unset {
			r.method = http.MethodDelete
		}
		switch {
		case len(args) == 1 && cmd.Flags().Changed("namespace"):
			return r, usageError{fmt.Errorf("give a repository name or --namespace, not both")}
		case len(args) == 1:
			r.path = repoPath(args[0]) + "/official"
			return r, checkRepoName(args[0])
		case ns == "" || strings.Contains(ns, "/"):
			return r, usageError{fmt.Errorf("repo official needs a repository name or --namespace NS (one path segment)")}
		}
		r.path = "/api/v1/namespaces/" + url.PathEscape(ns) + "/official"
		return r, nil
	})
	cmd.Flags().StringVar(&ns, "namespace", "", "flag every repository of this namespace")
	cmd.Flags().BoolVar(&unset, "unset", false, "take the official flag away")
	return cmd
}

// tagView is a tag as GET /api/v1/repositories/{name}/tags shows it
// (Docker Hub's names).
type tagView struct {
	Name        string     `json:"name"`
	Digest      string     `json:"digest"`
	MediaType   string     `json:"media_type"`
	FullSize    int64      `json:"full_size"`
	Images      []tagImage `json:"images"`
	LastUpdated time.Time  `json:"last_updated"`
	LastPushed  time.Time  `json:"last_pushed"`
	LastPulled  *time.Time `json:"last_pulled"`
}

// tagImage is one platform of a tag.
type tagImage struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant,omitempty"`
	Digest       string `json:"digest"`
	Size         int64  `json:"size"`
}

// platforms is os/arch[/variant] of each image, comma-separated, or "-".
func (t tagView) platforms() string {
	var ps []string
	for _, im := range t.Images {
		if im.OS == "" && im.Architecture == "" {
			continue
		}
		p := im.OS + "/" + im.Architecture
		if im.Variant != "" {
			p += "/" + im.Variant
		}
		ps = append(ps, p)
	}
	return orDash(strings.Join(ps, ","))
}

func newRepoTagsCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "tags NAME",
		Short: "List a repository's tags: digest, size, platforms, last push and pull",
		Args:  exactArgs(1, "one repository name"),
	}, repoArg, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		tags, err := listAll[tagView](cmd.Context(), c, repoPath(args[0])+"/tags", 0)
		if tags == nil {
			tags = []tagView{}
		}
		return shown{tags, []string{"TAG", "DIGEST", "SIZE", "PLATFORMS", "LAST PUSHED", "LAST PULLED"}, func() [][]string {
			rows := make([][]string, len(tags))
			for i, t := range tags {
				pulled := "never"
				if t.LastPulled != nil {
					pulled = when(*t.LastPulled)
				}
				rows[i] = []string{t.Name, orDash(t.Digest), humanSize(t.FullSize), t.platforms(), when(t.LastPushed), pulled}
			}
			return rows
		}}, err
	})
}

// humanSize is a byte count as docker prints it: decimal units, three
// significant digits ("512B", "8.19kB", "31.5MB").
func humanSize(n int64) string {
	units := []string{"B", "kB", "MB", "GB", "TB", "PB", "EB"}
	v, i := float64(n), 0
	for v >= 999.5 && i < len(units)-1 { // 999.5 would round to "1e+03"
		v /= 1000
		i++
	}
	return strconv.FormatFloat(v, 'g', 3, 64) + units[i]
}

func newNamespaceCmd() *cobra.Command {
	return groupCmd("namespace", "Show or change a user's or organization's namespace settings",
		newNamespaceShowCmd(), newNamespaceSetCmd())
}

// namespaceView is a namespace as the API shows it.
type namespaceView struct {
	Name           string `json:"name"`
	Kind           string `json:"kind"`
	DefaultPrivate bool   `json:"default_private"`
}

func newNamespaceShowCmd() *cobra.Command {
	return showCmd(&cobra.Command{
		Use:   "show NAMESPACE",
		Short: "Show a namespace: its kind and the visibility of new repositories",
		Args:  exactArgs(1, "one namespace"),
	}, nil, func(cmd *cobra.Command, c *apiClient, args []string) (shown, error) {
		var ns namespaceView
		err := c.do(cmd.Context(), http.MethodGet, "/api/v1/namespaces/"+url.PathEscape(args[0]), nil, &ns)
		return shown{ns, []string{"NAMESPACE", "KIND", "NEW REPOSITORIES"}, func() [][]string {
			return [][]string{{ns.Name, ns.Kind, visibility(ns.DefaultPrivate)}}
		}}, err
	})
}

func newNamespaceSetCmd() *cobra.Command {
	var defaultPrivate bool
	cmd := requestCmd(&cobra.Command{
		Use:     "set NAMESPACE --default-private=true|false",
		Short:   "Choose whether new repositories of a namespace are private",
		Example: "  hubmesh namespace set acme --default-private=true",
		Args:    exactArgs(1, "one namespace"),
	}, func(cmd *cobra.Command, args []string) (apiRequest, error) {
		if !cmd.Flags().Changed("default-private") {
			return apiRequest{}, usageError{fmt.Errorf("namespace set changes nothing: give --default-private=true or --default-private=false")}
		}
		return apiRequest{method: http.MethodPatch, path: "/api/v1/namespaces/" + url.PathEscape(args[0]), body: map[string]bool{"default_private": defaultPrivate}}, nil
	})
	cmd.Flags().BoolVar(&defaultPrivate, "default-private", false, "new repositories are private")
	return cmd
}
