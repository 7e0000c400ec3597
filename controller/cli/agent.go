package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dustin/go-humanize"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/kthw/kthw/controller/action"
	"github.com/kthw/kthw/controller/sshx"
)

func (c *CLI) agentCmd(g *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Talk to kthw-agent on nodes directly",
	}
	cmd.AddCommand(c.agentStatusCmd(g))
	return cmd
}

// sshFlags are the connection flags shared by verbs that take --target.
type sshFlags struct {
	targets     []string
	identities  []string
	knownHosts  string
	acceptNew   bool
	jump        string
	concurrency int
	timeout     time.Duration
	agentDir    string
	blobDir     string
}

func (f *sshFlags) register(cmd *cobra.Command) {
	fl := cmd.Flags()
	fl.StringArrayVar(&f.targets, "target", nil, "node to reach as [user@]host[:port] (repeatable)")
	fl.StringArrayVarP(&f.identities, "identity", "i", nil, "SSH private key file (repeatable; default: ssh-agent, then ~/.ssh/id_ed25519, id_ecdsa, id_rsa)")
	fl.StringVar(&f.knownHosts, "known-hosts", "", "known_hosts file used to verify host keys (default ~/.ssh/known_hosts)")
	fl.BoolVar(&f.acceptNew, "accept-new", false, "trust and record the host key of a host not yet in known_hosts (a changed key is still refused)")
	fl.StringVar(&f.jump, "jump", "", "reach targets through this bastion, [user@]host[:port]")
	fl.IntVar(&f.concurrency, "concurrency", 32, "how many nodes to connect at once")
	fl.DurationVar(&f.timeout, "timeout", 2*time.Minute, "time limit per node")
	fl.StringVar(&f.agentDir, "agent-dir", "", "root-owned directory on nodes for agent binaries (default /var/lib/kthw/agent)")
	fl.StringVar(&f.blobDir, "blob-dir", "", "directory on nodes for uploaded blobs (default /var/lib/kthw/blobs)")
}

func (c *CLI) agentStatusCmd(g *globalOptions) *cobra.Command {
	var (
		f      sshFlags
		output string
	)
	cmd := &cobra.Command{
		Use:   "status --target [user@]host[:port] [--target ...]",
		Short: "Push the agent where needed and print its version, facts and unit status per target",
		Long: "Connect to each target over SSH (host keys verified against known_hosts), upload kthw-agent\n" +
			"only when the node has no binary with the same sha256, start it over the SSH session and\n" +
			"ask it for facts and status. Exits non-zero when any target failed.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if output != "table" && output != "json" {
				return fmt.Errorf("bad -o %q: want table or json", output)
			}
			opts, err := c.agentStatusOptions(g, &f)
			if err != nil {
				return err
			}
			reports := action.AgentStatus(cmd.Context(), opts)
			if output == "json" {
				err = writeStatusJSON(cmd.OutOrStdout(), reports)
			} else {
				err = writeStatusTable(cmd.OutOrStdout(), reports)
			}
			if err != nil {
				return err
			}
			failed := 0
			for _, r := range reports {
				if r.Err != nil {
					failed++
					fmt.Fprintf(c.stderr, "%s: %v\n", r.Target, r.Err)
				}
			}
			if failed > 0 {
				return fmt.Errorf("%w: %d of %d", ErrSomeFailed, failed, len(reports))
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table or json")
	return cmd
}

func (c *CLI) agentStatusOptions(g *globalOptions, f *sshFlags) (action.AgentStatusOptions, error) {
	var o action.AgentStatusOptions
	if len(f.targets) == 0 {
		return o, errors.New("no --target given")
	}
	var errs []error
	for _, s := range f.targets {
		t, err := sshx.ParseTarget(s)
		if err != nil {
			errs = append(errs, fmt.Errorf("--target %q: %w", s, err))
			continue
		}
		o.Targets = append(o.Targets, t)
	}
	so := sshx.Options{IdentityFiles: f.identities, KnownHostsFile: f.knownHosts, AcceptNew: f.acceptNew}
	if f.jump != "" {
		j, err := sshx.ParseTarget(f.jump)
		if err != nil {
			errs = append(errs, fmt.Errorf("--jump %q: %w", f.jump, err))
		}
		so.Jump = &j
	}
	if err := errors.Join(errs...); err != nil {
		return o, err
	}
	bin, err := c.agentBinary(g)
	if err != nil {
		return o, err
	}
	if err := sshx.DefaultOptions(&so, c.getenv); err != nil {
		return o, err
	}
	log, err := c.logger(g)
	if err != nil {
		return o, err
	}
	o.Node.SSH = so
	o.Node.AgentBinary = bin
	o.Node.AgentDir = f.agentDir
	o.Node.BlobDir = f.blobDir
	o.Node.ControllerVersion = c.version
	o.Node.Logger = log
	o.Concurrency = f.concurrency
	o.Timeout = f.timeout
	o.Logger = log
	return o, nil
}

// statusJSON is the -o json shape of one target.
type statusJSON struct {
	Target string          `json:"target"`
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Agent  *agentJSON      `json:"agent,omitempty"`
	Facts  json.RawMessage `json:"facts,omitempty"`
	Status json.RawMessage `json:"status,omitempty"`
}

type agentJSON struct {
	Version     string  `json:"version"`
	APIVersion  string  `json:"api_version"`
	SHA256      string  `json:"sha256"`
	Uploaded    bool    `json:"uploaded"`
	UploadBytes int64   `json:"upload_bytes"`
	DialMS      float64 `json:"dial_ms"`
	PushMS      float64 `json:"push_ms"`
	StartMS     float64 `json:"start_ms"`
}

var pjson = protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}

func writeStatusJSON(w io.Writer, reports []action.TargetReport) error {
	out := struct {
		Targets []statusJSON `json:"targets"`
	}{Targets: []statusJSON{}}
	for _, r := range reports {
		j := statusJSON{Target: r.Target, OK: r.Err == nil}
		if r.Err != nil {
			j.Error = r.Err.Error()
		}
		if r.AgentVersion != "" {
			j.Agent = &agentJSON{Version: r.AgentVersion, APIVersion: r.APIVersion, SHA256: r.SHA256,
				Uploaded: r.Uploaded, UploadBytes: r.UploadBytes,
				DialMS: ms(r.Dial), PushMS: ms(r.Push), StartMS: ms(r.Start)}
		}
		var err error
		if j.Facts, err = marshalProto(r.Facts); err != nil {
			return err
		}
		if j.Status, err = marshalProto(r.Status); err != nil {
			return err
		}
		out.Targets = append(out.Targets, j)
	}
	return writeJSON(w, out)
}

func marshalProto(m proto.Message) (json.RawMessage, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil, nil
	}
	b, err := pjson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode %T: %w", m, err)
	}
	return b, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func writeStatusTable(w io.Writer, reports []action.TargetReport) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tAGENT\tSHA256\tPUSHED\tOS\tKERNEL\tARCH\tCPUS\tMEMORY\tUNITS")
	for _, r := range reports {
		if r.Err != nil {
			fmt.Fprintf(tw, "%s\tERROR\t-\t-\t-\t-\t-\t-\t-\t-\n", r.Target)
			continue
		}
		f := r.Facts
		pushed := "no"
		if r.Uploaded {
			pushed = fmt.Sprintf("yes (%s)", humanize.IBytes(uint64(r.UploadBytes)))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Target, r.AgentVersion, short(r.SHA256), pushed,
			osName(f.GetOs().GetId(), f.GetOs().GetVersionId()), f.GetKernel(), f.GetArch(), f.GetCpus(),
			humanize.IBytes(f.GetMemoryBytes()), unitsSummary(r))
	}
	return tw.Flush()
}

func unitsSummary(r action.TargetReport) string {
	st := r.Status
	if !st.GetUnitsAvailable() {
		d := st.GetUnitsDetail()
		if d == "" {
			d = "unknown"
		}
		return "not available: " + d
	}
	parts := make([]string, 0, len(st.GetUnits()))
	for _, u := range st.GetUnits() {
		state := u.GetActiveState()
		if u.GetLoadState() == "not-found" {
			state = "not-found"
		}
		parts = append(parts, strings.TrimSuffix(u.GetName(), ".service")+"="+state)
	}
	return strings.Join(parts, " ")
}

func osName(id, ver string) string {
	if id == "" {
		return "-"
	}
	if ver == "" {
		return id
	}
	return id + " " + ver
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
