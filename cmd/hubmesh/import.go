package main

import (
	"context"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/spf13/cobra"
)

func newImportCmd() *cobra.Command {
	var (
		f     apiFlags
		repo  string
		quiet bool
	)
	cmd := &cobra.Command{
		Use:   "import FILE",
		Short: "Load an OCI image layout tarball (from `hubmesh export`) into a node",
		Long: "Push every image of an OCI image layout tarball to the node: each blob and manifest\n" +
			"is verified against its digest before anything is sent, blobs the node holds already\n" +
			"are skipped (so importing twice uploads nothing), then manifests go by digest and\n" +
			"tags last. Entries are named by their org.opencontainers.image.ref.name annotation\n" +
			"(REPO:TAG); --repo names the repository of entries that carry only a tag, as other\n" +
			"tools write them. A progress bar goes to standard error when it is a terminal.",
		Example: "  hubmesh import --server http://edge:5000 bundle.tar\n" +
			"  hubmesh import --repo acme/api skopeo-layout.tar",
		Args: exactArgs(1, "one tarball"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if repo != "" {
				if err := checkRepoName(repo); err != nil {
					return err
				}
			}
			c, err := newOCIClient(f.server)
			if err != nil {
				return err
			}
			b, err := openBundle(args[0])
			if err != nil {
				return err
			}
			defer b.Close()
			sum, err := importBundle(cmd.Context(), c, b, repo, cmd.ErrOrStderr(), quiet)
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(cmd.OutOrStdout(), "imported %d image(s) into %s: %d blobs uploaded (%s), %d already present; %d manifests pushed, %d tags set\n",
				sum.images, c.base, sum.uploaded, humanBytes(sum.uploadedBytes), sum.present, sum.manifests, sum.tags)
			return err
		},
	}
	f.add(cmd)
	cmd.Flags().StringVar(&repo, "repo", "", "repository of entries whose name is only a tag")
	cmd.Flags().BoolVarP(&quiet, "quiet", "q", false, "no progress bar")
	return cmd
}

// importSummary counts what an import did.
type importSummary struct {
	images, uploaded, present, manifests, tags int
	uploadedBytes                              int64
}

// importImage is one entry of index.json, resolved: its repository and
// tag, and its manifests (children before parents) and blobs.
type importImage struct {
	repo, tag string
	top       ocispec.Descriptor
	manifests []importManifest
	blobs     []ocispec.Descriptor
}

type importManifest struct {
	desc ocispec.Descriptor
	body []byte
}

// importBundle verifies every manifest and blob of b, then pushes them.
func importBundle(ctx context.Context, c *ociClient, b *bundle, defaultRepo string, stderr io.Writer, quiet bool) (importSummary, error) {
	var (
		sum    importSummary
		images []importImage
		total  int64
		blobs  = map[digest.Digest]ocispec.Descriptor{}
	)
	if len(b.index.Manifests) == 0 {
		return sum, b.bad("index.json names no images")
	}
	for i, top := range b.index.Manifests {
		repo, tag := splitRefName(top.Annotations[ocispec.AnnotationRefName], defaultRepo)
		if r := top.Annotations[annotationRepository]; r != "" {
			repo = r
		}
		if repo == "" {
			repo = defaultRepo
		}
		if repo == "" {
			return sum, fmt.Errorf("%s: index.json entry %d (%s) has no repository name; give --repo", b.name, i, top.Digest)
		}
		if err := checkRepoName(repo); err != nil {
			return sum, fmt.Errorf("%s: index.json entry %d: %w", b.name, i, err)
		}
		im := importImage{repo: repo, tag: tag, top: top}
		seen := map[digest.Digest]bool{}
		if err := im.walk(b, top, seen, 0); err != nil {
			return sum, err
		}
		for _, d := range im.blobs {
			if _, ok := blobs[d.Digest]; !ok {
				blobs[d.Digest] = d
				total += d.Size
			}
		}
		images = append(images, im)
	}

	verifyBar := newProgressBar(stderr, "verify", quiet)
	verifyBar.start(total)
	for _, d := range blobs {
		if err := b.verify(d, verifyBar.add); err != nil {
			verifyBar.abort()
			return sum, err
		}
	}
	verifyBar.finish()

	bar := newProgressBar(stderr, "import", quiet)
	bar.start(total)
	defer bar.abort()
	holder := map[digest.Digest]string{} // a repository that holds the blob now
	for _, im := range images {
		for _, d := range im.blobs {
			ok, _, err := c.stat(ctx, im.repo, "blobs", d.Digest.String())
			if err != nil {
				return sum, err
			}
			if ok {
				sum.present++
				holder[d.Digest] = im.repo
				bar.add(d.Size)
				continue
			}
			r, err := b.open(d)
			if err != nil {
				return sum, err
			}
			sent, err := c.uploadBlob(ctx, im.repo, holder[d.Digest], d.Digest, d.Size, func() io.Reader {
				return &countingReader{r: io.NewSectionReader(r, 0, d.Size), add: bar.add}
			})
			if err != nil {
				return sum, err
			}
			if sent {
				sum.uploaded++
				sum.uploadedBytes += d.Size
			} else {
				sum.present++
				bar.add(d.Size)
			}
			holder[d.Digest] = im.repo
		}
		for _, m := range im.manifests {
			ok, _, err := c.stat(ctx, im.repo, "manifests", m.desc.Digest.String())
			if err != nil {
				return sum, err
			}
			if !ok {
				if err := c.putManifest(ctx, im.repo, m.desc.Digest.String(), m.desc.MediaType, m.body); err != nil {
					return sum, err
				}
				sum.manifests++
			}
		}
		if im.tag != "" {
			ok, d, err := c.stat(ctx, im.repo, "manifests", im.tag)
			if err != nil {
				return sum, err
			}
			if !ok || d != im.top.Digest {
				top := im.manifests[len(im.manifests)-1]
				if err := c.putManifest(ctx, im.repo, im.tag, top.desc.MediaType, top.body); err != nil {
					return sum, err
				}
				sum.tags++
			}
		}
		sum.images++
	}
	bar.finish()
	return sum, nil
}

// walk reads and verifies manifest desc and its children, recording them
// children first, and the blobs they name.
func (im *importImage) walk(b *bundle, desc ocispec.Descriptor, seen map[digest.Digest]bool, depth int) error {
	if depth > maxIndexDepth {
		return b.bad("indexes nested more than %d deep", maxIndexDepth)
	}
	if seen[desc.Digest] {
		return nil
	}
	seen[desc.Digest] = true
	body, err := b.readManifest(desc)
	if err != nil {
		return err
	}
	desc.MediaType = manifestMediaType(body, desc.MediaType)
	m, err := parseManifest(body, desc.MediaType)
	if err != nil {
		return b.bad("manifest %s: %v", desc.Digest, err)
	}
	for _, child := range m.Children {
		if err := im.walk(b, child, seen, depth+1); err != nil {
			return err
		}
	}
	for _, bl := range m.Blobs {
		if !seen[bl.Digest] {
			seen[bl.Digest] = true
			im.blobs = append(im.blobs, bl)
		}
	}
	im.manifests = append(im.manifests, importManifest{desc: ocispec.Descriptor{MediaType: desc.MediaType, Digest: desc.Digest, Size: desc.Size}, body: body})
	return nil
}
