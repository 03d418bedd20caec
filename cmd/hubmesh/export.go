package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
)

func newExportCmd() *cobra.Command {
	var (
		f       apiFlags
		out     string
		allTags bool
		quiet   bool
		matches []string
	)
	cmd := &cobra.Command{
		Use:   "export [REPO[:TAG|@DIGEST]...] [--match PATTERN]... -o FILE",
		Short: "Write images to an OCI image layout tarball, for an air-gapped site",
		Long: "Pull the named images through the node's OCI API and write them as one OCI image\n" +
			"layout tarball (oci-layout, index.json, blobs/), with every digest verified. A REPO\n" +
			"without a tag means REPO:latest; --all-tags takes every tag of each REPO. Image\n" +
			"indexes are written with all their platform manifests. `hubmesh import` loads the\n" +
			"file into another node; skopeo, crane and oras read it as an OCI layout too.\n" +
			"--match REPO_GLOB[:TAG_GLOB] (repeatable, path.Match globs as in `serve --sync`)\n" +
			"adds every repository of the catalog and every tag that match, e.g. 'acme/*:v*'.\n" +
			"A progress bar goes to standard error when it is a terminal.",
		Example: "  hubmesh export --server http://hub:5000 acme/api:v1 library/base -o bundle.tar\n" +
			"  hubmesh export --all-tags acme/api -o api.tar\n" +
			"  hubmesh export --match 'acme/*:v*' --match 'library/*' -o edge.tar",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 && len(matches) == 0 {
				return usageError{fmt.Errorf("%s takes at least one image reference; see '%s --help'", cmd.CommandPath(), cmd.CommandPath())}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError{errors.New("export needs -o FILE: where to write the tarball")}
			}
			refs, err := parseExportRefs(args, allTags)
			if err != nil {
				return err
			}
			policy, err := parseMatches(matches)
			if err != nil {
				return err
			}
			c, err := newOCIClient(f.server)
			if err != nil {
				return err
			}
			more, err := matchingRefs(cmd.Context(), c, policy)
			if err != nil {
				return err
			}
			refs = append(refs, more...)
			if len(refs) == 0 {
				return fmt.Errorf("nothing to export: no repository or tag matches %s", strings.Join(matches, ", "))
			}
			bar := newProgressBar(cmd.ErrOrStderr(), "export", quiet)
			sum, err := exportBundle(cmd.Context(), c, refs, out, bar)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "exported %d image(s): %d manifests, %d blobs, %s to %s\n",
				sum.refs, sum.manifests, sum.blobs, humanBytes(sum.bytes), out)
			return err
		},
	}
	f.add(cmd)
	cmd.Flags().StringVarP(&out, "output", "o", "", "the tarball to write (required)")
	cmd.Flags().BoolVarP(&allTags, "all-tags", "a", false, "export every tag of each repository")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	cmd.Flags().StringArrayVar(&matches, "match", nil, "REPO_GLOB[:TAG_GLOB]: export every repository and tag that match (repeatable)")
	return cmd
}

// exportMatch is one --match pattern: a repository glob and a tag glob
// ("" matches every tag).
type exportMatch struct{ repo, tag string }

// parseMatches reads the --match patterns, refusing malformed globs.
func parseMatches(ps []string) ([]exportMatch, error) {
	out := make([]exportMatch, 0, len(ps))
	for _, p := range ps {
		repo, tag, _ := strings.Cut(p, ":")
		for _, g := range []string{repo, tag} {
			if _, err := path.Match(g, ""); err != nil {
				return nil, usageError{fmt.Errorf("--match %q: %v", p, err)}
			}
		}
		if repo == "" {
			return nil, usageError{fmt.Errorf("--match %q: want REPO_GLOB[:TAG_GLOB]", p)}
		}
		out = append(out, exportMatch{repo: repo, tag: tag})
	}
	return out, nil
}

// matchingRefs lists the catalog and the tags of the repositories that a
// pattern names, and returns a reference for every matching tag.
func matchingRefs(ctx context.Context, c *ociClient, policy []exportMatch) ([]exportRef, error) {
	if len(policy) == 0 {
		return nil, nil
	}
	repos, err := c.catalog(ctx)
	if err != nil {
		return nil, err
	}
	var refs []exportRef
	for _, repo := range repos {
		var tagGlobs []string
		for _, m := range policy {
			if ok, _ := path.Match(m.repo, repo); ok {
				tagGlobs = append(tagGlobs, m.tag)
			}
		}
		if len(tagGlobs) == 0 {
			continue
		}
		tags, err := c.tags(ctx, repo)
		if err != nil {
			return nil, err
		}
		for _, tag := range tags {
			for _, g := range tagGlobs {
				if ok, _ := path.Match(g, tag); g == "" || ok {
					refs = append(refs, exportRef{repo: repo, ref: tag})
					break
				}
			}
		}
	}
	return refs, nil
}

// exportRef is one reference to export: repo with a tag or a digest, or
// every tag of repo.
type exportRef struct {
	repo, ref string // ref is a tag or a digest
	allTags   bool
}

// parseExportRefs reads the image arguments of export.
func parseExportRefs(args []string, allTags bool) ([]exportRef, error) {
	var refs []exportRef
	for _, a := range args {
		repo, ref := a, ""
		if r, d, ok := strings.Cut(a, "@"); ok {
			if _, err := digest.Parse(d); err != nil {
				return nil, usageError{fmt.Errorf("%q: bad digest: %v", a, err)}
			}
			repo, ref = r, d
		} else if i := strings.LastIndex(a, ":"); i > strings.LastIndex(a, "/") {
			repo, ref = a[:i], a[i+1:]
			if ref == "" {
				return nil, usageError{fmt.Errorf("%q: empty tag", a)}
			}
		}
		if err := checkRepoName(repo); err != nil {
			return nil, err
		}
		if allTags && ref != "" {
			return nil, usageError{fmt.Errorf("%q: --all-tags takes repositories without a tag or digest", a)}
		}
		if !allTags && ref == "" {
			ref = "latest"
		}
		refs = append(refs, exportRef{repo: repo, ref: ref, allTags: allTags})
	}
	return refs, nil
}

// exportSummary counts what an export wrote.
type exportSummary struct {
	refs, manifests, blobs int
	bytes                  int64
}

// plannedManifest is a manifest to write and its bytes.
type plannedManifest struct {
	desc ocispec.Descriptor
	body []byte
}

// plannedBlob is a blob to copy and a repository that holds it.
type plannedBlob struct {
	repo string
	desc ocispec.Descriptor
}

// exportPlan is everything an export writes: the manifests (read while
// planning; they are small), the blobs to stream, and the index entries.
type exportPlan struct {
	manifests map[digest.Digest]plannedManifest
	order     []digest.Digest // manifests in the order met
	blobs     []plannedBlob
	seenBlob  map[digest.Digest]bool
	entries   []planEntry
	total     int64
}

type planEntry struct {
	repo, tag string
	desc      ocispec.Descriptor
}

// exportBundle writes the images refs name to the file out: into a
// temporary file next to it, renamed into place once complete, so a
// failed export leaves no partial bundle.
func exportBundle(ctx context.Context, c *ociClient, refs []exportRef, out string, bar *progressBar) (exportSummary, error) {
	plan, err := planExport(ctx, c, refs)
	if err != nil {
		return exportSummary{}, err
	}
	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".*.tmp")
	if err != nil {
		return exportSummary{}, err
	}
	defer func() {
		if tmp != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	bar.start(plan.total)
	if err := writeExport(ctx, c, plan, tmp, bar); err != nil {
		bar.abort()
		return exportSummary{}, err
	}
	bar.finish()
	if err := tmp.Sync(); err != nil {
		return exportSummary{}, err
	}
	if err := tmp.Close(); err != nil {
		return exportSummary{}, err
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return exportSummary{}, err
	}
	tmp = nil
	return exportSummary{refs: len(plan.entries), manifests: len(plan.order), blobs: len(plan.blobs), bytes: plan.total}, nil
}

// planExport resolves every reference and walks its manifests.
func planExport(ctx context.Context, c *ociClient, refs []exportRef) (*exportPlan, error) {
	p := &exportPlan{manifests: map[digest.Digest]plannedManifest{}, seenBlob: map[digest.Digest]bool{}}
	for _, r := range refs {
		tags := []string{r.ref}
		if r.allTags {
			all, err := c.tags(ctx, r.repo)
			if err != nil {
				return nil, err
			}
			if len(all) == 0 {
				return nil, fmt.Errorf("%s has no tags", r.repo)
			}
			tags = all
		}
		for _, tag := range tags {
			desc, err := p.walk(ctx, c, r.repo, tag, 0)
			if err != nil {
				return nil, err
			}
			if _, err := digest.Parse(tag); err == nil {
				tag = ""
			}
			p.entries = append(p.entries, planEntry{repo: r.repo, tag: tag, desc: desc})
		}
	}
	return p, nil
}

// maxIndexDepth bounds nested indexes.
const maxIndexDepth = 8

// walk fetches repo's manifest ref and, recursively, its children, and
// records the blobs they name. It returns the manifest's descriptor.
func (p *exportPlan) walk(ctx context.Context, c *ociClient, repo, ref string, depth int) (ocispec.Descriptor, error) {
	if depth > maxIndexDepth {
		return ocispec.Descriptor{}, fmt.Errorf("%s: indexes nested more than %d deep", refString(repo, ref), maxIndexDepth)
	}
	body, mt, d, err := c.getManifest(ctx, repo, ref)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	desc := ocispec.Descriptor{MediaType: mt, Digest: d, Size: int64(len(body))}
	if _, ok := p.manifests[d]; ok {
		return desc, nil
	}
	m, err := parseManifest(body, mt)
	if err != nil {
		return desc, fmt.Errorf("manifest %s: %w", refString(repo, ref), err)
	}
	for _, child := range m.Children {
		got, err := p.walk(ctx, c, repo, child.Digest.String(), depth+1)
		if err != nil {
			return desc, err
		}
		if got.Size != child.Size {
			return desc, fmt.Errorf("manifest %s: child %s has %d bytes, the index says %d", refString(repo, ref), child.Digest, got.Size, child.Size)
		}
	}
	for _, b := range m.Blobs {
		if p.seenBlob[b.Digest] {
			continue
		}
		p.seenBlob[b.Digest] = true
		p.blobs = append(p.blobs, plannedBlob{repo: repo, desc: b})
		p.total += b.Size
	}
	p.manifests[d] = plannedManifest{desc: desc, body: body}
	p.order = append(p.order, d)
	p.total += desc.Size
	return desc, nil
}

// writeExport streams the plan into w as a bundle.
func writeExport(ctx context.Context, c *ociClient, p *exportPlan, w io.Writer, bar *progressBar) error {
	bw, err := newBundleWriter(w)
	if err != nil {
		return err
	}
	for _, b := range p.blobs {
		if bw.has(b.desc.Digest) {
			continue
		}
		rc, err := c.getBlob(ctx, b.repo, b.desc.Digest)
		if err != nil {
			return err
		}
		err = bw.blob(b.desc, &countingReader{r: rc, add: bar.add})
		rc.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", b.repo, err)
		}
	}
	for _, d := range p.order {
		m := p.manifests[d]
		if err := bw.blob(m.desc, strings.NewReader(string(m.body))); err != nil {
			return err
		}
		bar.add(m.desc.Size)
	}
	for _, e := range p.entries {
		bw.ref(e.repo, e.tag, e.desc)
	}
	return bw.finish()
}

// progressBar draws bytes done of a total on a terminal, at most ten
// times a second; it draws nothing when its writer is not a terminal or
// it is quiet. It is used from one goroutine.
type progressBar struct {
	w           io.Writer
	label       string
	on          bool
	total, done int64
	last        time.Time
	ended       bool // the line is ended: finish or abort ran
}

func newProgressBar(w io.Writer, label string, quiet bool) *progressBar {
	return &progressBar{w: w, label: label, on: !quiet && isTerminal(w)}
}

// isTerminal tells whether w is a terminal.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

func (b *progressBar) start(total int64) {
	b.total, b.done = total, 0
	b.draw()
}

func (b *progressBar) add(n int64) {
	b.done += n
	if b.on && time.Since(b.last) >= 100*time.Millisecond {
		b.draw()
	}
}

func (b *progressBar) draw() {
	if !b.on {
		return
	}
	b.last = time.Now()
	const width = 30
	frac := 1.0
	if b.total > 0 {
		frac = min(float64(b.done)/float64(b.total), 1)
	}
	full := int(frac * width)
	bar := strings.Repeat("=", full) + strings.Repeat(" ", width-full)
	if full < width {
		bar = bar[:full] + ">" + bar[full+1:]
	}
	fmt.Fprintf(b.w, "\r%s [%s] %s / %s %3d%%", b.label, bar, humanBytes(b.done), humanBytes(b.total), int(frac*100))
}

// finish draws the full bar and ends its line.
func (b *progressBar) finish() {
	if b.on && !b.ended {
		b.ended = true
		b.draw()
		fmt.Fprintln(b.w)
	}
}

// abort ends the bar's line so that an error prints on a line of its own.
func (b *progressBar) abort() {
	if b.on && !b.ended {
		b.ended = true
		fmt.Fprintln(b.w)
	}
}

// humanBytes formats n bytes with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
