package cli

import (
	"encoding/json"
	"fmt"
	"github.com/dustin/go-humanize"
	"github.com/kthw/kthw/proto/kthw/agent/v1/etcdsnap"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kthw/kthw/agent/etcd"
)

// etcdCmd is `kthw-agent etcd`: snapshots, their verification and the
// member's status on a kubeadm control-plane node.
func (c *CLI) etcdCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Snapshots and status of the node's etcd (kubeadm stacked etcd)",
		Long: "Snapshots and status of the etcd member on this node. The defaults are kubeadm's: the member at\n" +
			etcd.DefaultEndpoint + " and the certificates in " + etcd.DefaultPKIDir + " (ca.crt, healthcheck-client.crt/.key,\n" +
			"or server.crt/.key when those are missing). Snapshots live in " + etcd.DefaultDir + ".",
	}
	cmd.AddCommand(c.etcdSnapshotCmd(), c.etcdSnapshotsCmd(), c.etcdVerifyCmd(), c.etcdStatusCmd())
	return cmd
}

type endpointFlags struct {
	url, cacert, cert, key string
	timeout                time.Duration
}

func (f *endpointFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringVar(&f.url, "endpoint", etcd.DefaultEndpoint, "client URL of the etcd member (one: a snapshot comes from one member)")
	fl.StringVar(&f.cacert, "cacert", "", "CA certificate of etcd (default "+etcd.DefaultPKIDir+"/ca.crt)")
	fl.StringVar(&f.cert, "cert", "", "client certificate (default "+etcd.DefaultPKIDir+"/healthcheck-client.crt, or server.crt)")
	fl.StringVar(&f.key, "key", "", "client key (default the one of --cert's default)")
	fl.DurationVar(&f.timeout, "dial-timeout", etcd.DefaultDialTimeout, "time limit to connect and for each call but the snapshot stream")
}

func (f *endpointFlags) endpoint() (etcd.Endpoint, error) {
	if (f.cert == "") != (f.key == "") {
		return etcd.Endpoint{}, fmt.Errorf("give --cert and --key together")
	}
	return etcd.Endpoint{URL: f.url, CACert: f.cacert, Cert: f.cert, Key: f.key, DialTimeout: f.timeout}, nil
}

func checkOutput(o string) error {
	if o != "" && o != "json" {
		return fmt.Errorf("bad -o %q: want json or nothing", o)
	}
	return nil
}

func (c *CLI) etcdSnapshotCmd() *cobra.Command {
	var (
		ep     endpointFlags
		dir    string
		keep   int
		output string
	)
	cmd := &cobra.Command{
		Use:   "snapshot",
		Short: "Save a snapshot of the etcd member into the snapshot directory and apply retention",
		Long: "Save a snapshot the way etcd's own client does (one member, a .part file, etcd's sha256 trailer\n" +
			"checked, fsync, rename), write its manifest (<file>.json: time, revision, member, etcd version, size,\n" +
			"sha256) and keep the newest --keep snapshots. Files are 0600, the directory 0700.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			if keep < 0 {
				return fmt.Errorf("bad --keep %d: want 0 (keep all) or more", keep)
			}
			e, err := ep.endpoint()
			if err != nil {
				return err
			}
			saved, err := etcd.Save(cmd.Context(), etcd.SaveOptions{Endpoint: e, Dir: dir, Keep: keep})
			if saved == nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				w.Write(etcdsnap.MarshalManifest(saved.Manifest))
				return err
			}
			m := saved.Manifest
			fmt.Fprintf(w, "saved %s: revision %d, %s, sha256 %s, member %s (%s), etcd %s, in %s (%s/s)\n",
				saved.Path, m.GetRevision(), humanize.Bytes(uint64(m.GetSize())), m.GetSha256(), m.GetMemberName(), m.GetMemberId(),
				m.GetEtcdVersion(), saved.Took.Round(time.Millisecond), humanize.Bytes(uint64(float64(m.GetSize())/max(saved.Took.Seconds(), 1e-3))))
			for _, p := range saved.Pruned {
				fmt.Fprintf(w, "removed %s (keeping %d)\n", p, keep)
			}
			return err
		},
	}
	ep.register(cmd)
	cmd.Flags().StringVar(&dir, "dir", etcd.DefaultDir, "directory that keeps the snapshots")
	cmd.Flags().IntVar(&keep, "keep", 0, "snapshots to keep in --dir, this one included (0: all)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json: print the manifest")
	return cmd
}

func (c *CLI) etcdSnapshotsCmd() *cobra.Command {
	var dir, output string
	cmd := &cobra.Command{
		Use:   "snapshots",
		Short: "List the snapshots in the snapshot directory, newest first",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			list, err := etcd.List("", dir)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				out := make([]json.RawMessage, 0, len(list))
				for _, f := range list {
					out = append(out, json.RawMessage(marshalJSON(f)))
				}
				return writeJSON(w, out)
			}
			if len(list) == 0 {
				fmt.Fprintf(w, "no snapshots in %s\n", dir)
				return nil
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "FILE\tTIME\tREVISION\tSIZE\tMEMBER\tETCD\tSHA256")
			for _, f := range list {
				m := f.GetManifest()
				if m == nil {
					fmt.Fprintf(tw, "%s\t%s\t-\t%s\t-\t-\t(%s)\n", f.GetPath(), f.GetModTime(), humanize.Bytes(uint64(f.GetSize())), f.GetManifestError())
					continue
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\n", f.GetPath(), m.GetTime(), m.GetRevision(), humanize.Bytes(uint64(f.GetSize())),
					m.GetMemberName(), m.GetEtcdVersion(), short(m.GetSha256()))
			}
			return tw.Flush()
		},
	}
	cmd.Flags().StringVar(&dir, "dir", etcd.DefaultDir, "directory that keeps the snapshots")
	cmd.Flags().StringVarP(&output, "output", "o", "", "json: one object per snapshot")
	return cmd
}

func (c *CLI) etcdVerifyCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Check a snapshot: etcd's sha256 trailer and, when it has one, its manifest",
		Long: "Check that FILE is an intact etcd snapshot: the sha256 of its content equals etcd's trailer (what\n" +
			"etcdutl checks before a restore) and, when FILE.json exists, size and sha256 equal the manifest's.\n" +
			"Exits non-zero when it does not verify.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			v, err := etcd.Verify(args[0])
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				return writeJSON(w, map[string]any{"path": v.Path, "size": v.Size, "revision": v.Revision, "sha256": v.SHA256, "manifest": v.Manifest != nil, "ok": true})
			}
			how := "etcd's sha256 trailer"
			if v.Manifest != nil {
				how += " and its manifest"
			}
			fmt.Fprintf(w, "ok: %s (%s, revision %d, sha256 %s) matches %s\n", v.Path, humanize.Bytes(uint64(v.Size)), v.Revision, v.SHA256, how)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "json")
	return cmd
}

func (c *CLI) etcdStatusCmd() *cobra.Command {
	var (
		ep     endpointFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show every member: health, leader, database size, revision",
		Long: "Ask the member at --endpoint for the member list and alarms, then every member for its status and\n" +
			"health (a linearizable read, as etcdctl endpoint health). Exits non-zero when a member is unhealthy\n" +
			"or an alarm is raised.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := checkOutput(output); err != nil {
				return err
			}
			e, err := ep.endpoint()
			if err != nil {
				return err
			}
			st, err := etcd.Status(cmd.Context(), e)
			if err != nil {
				return err
			}
			w := cmd.OutOrStdout()
			if output == "json" {
				if err := writeJSON(w, st); err != nil {
					return err
				}
			} else {
				writeStatus(w, st)
			}
			if !st.Healthy {
				return fmt.Errorf("etcd is not healthy: %d of %d members unhealthy, %d alarm(s)", st.Unhealthy(), len(st.Members), len(st.Alarms))
			}
			return nil
		},
	}
	ep.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "json")
	return cmd
}

func writeStatus(w io.Writer, st *etcd.ClusterStatus) {
	health := "healthy"
	if !st.Healthy {
		health = "NOT HEALTHY"
	}
	fmt.Fprintf(w, "cluster %s via %s: %s, leader %s\n", st.ClusterID, st.Endpoint, health, st.LeaderID)
	for _, a := range st.Alarms {
		fmt.Fprintf(w, "alarm: %s\n", a)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "MEMBER\tID\tENDPOINT\tLEADER\tHEALTH\tVERSION\tDB SIZE\tIN USE\tREVISION\tRAFT TERM/INDEX")
	for _, m := range st.Members {
		leader, h := "", "healthy"
		if m.Leader {
			leader = "*"
		}
		if !m.Healthy {
			h = "unhealthy: " + m.Error
		}
		name := m.Name
		if m.Learner {
			name += " (learner)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d/%d\n", name, m.ID, m.Endpoint, leader, h, m.Version,
			humanize.Bytes(uint64(m.DBSize)), humanize.Bytes(uint64(m.DBSizeInUse)), m.Revision, m.RaftTerm, m.RaftIndex)
	}
	tw.Flush()
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}

func marshalJSON(m proto.Message) []byte {
	b, _ := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	return b
}
