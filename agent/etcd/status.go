package etcd

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// MemberStatus is one member as its own endpoint reports it.
type MemberStatus struct {
	ID         string   `json:"id"`
	Name       string   `json:"name"`
	PeerURLs   []string `json:"peer_urls"`
	ClientURLs []string `json:"client_urls"`
	Learner    bool     `json:"learner,omitempty"`
	// Endpoint is the client URL that was asked.
	Endpoint string `json:"endpoint,omitempty"`
	Leader   bool   `json:"leader"`
	// Healthy: the member answered a linearizable read (which needs a
	// quorum) and reported no errors, as `etcdctl endpoint health` checks.
	Healthy     bool   `json:"healthy"`
	Error       string `json:"error,omitempty"`
	Version     string `json:"version,omitempty"`
	DBSize      int64  `json:"db_size"`
	DBSizeInUse int64  `json:"db_size_in_use"`
	Revision    int64  `json:"revision"`
	RaftTerm    uint64 `json:"raft_term"`
	RaftIndex   uint64 `json:"raft_index"`
}

// ClusterStatus is what Status reports.
type ClusterStatus struct {
	// Endpoint is the member Status asked for the member list.
	Endpoint  string         `json:"endpoint"`
	ClusterID string         `json:"cluster_id"`
	LeaderID  string         `json:"leader_id"`
	Members   []MemberStatus `json:"members"`
	// Alarms are the cluster's active alarms (NOSPACE, CORRUPT).
	Alarms  []string `json:"alarms,omitempty"`
	Healthy bool     `json:"healthy"`
}

// Unhealthy returns how many members are not healthy.
func (s *ClusterStatus) Unhealthy() int {
	n := 0
	for _, m := range s.Members {
		if !m.Healthy {
			n++
		}
	}
	return n
}

// Status asks the member at ep for the member list and alarms, then every
// member at its first client URL (with ep's certificates, which kubeadm
// makes valid for every member) for its status and health. A member that
// does not answer is reported unhealthy with the reason; only an ep that
// does not answer is an error.
func Status(ctx context.Context, ep Endpoint) (*ClusterStatus, error) {
	ep = ep.WithDefaults()
	cli, st, err := ep.connect(ctx)
	if err != nil {
		return nil, fmt.Errorf("etcd status: %w", err)
	}
	defer cli.Close()
	out := &ClusterStatus{
		Endpoint:  ep.URL,
		ClusterID: memberID(st.Header.GetClusterId()),
		LeaderID:  memberID(st.Leader),
	}
	lctx, cancel := context.WithTimeout(ctx, ep.DialTimeout)
	defer cancel()
	list, err := cli.MemberList(lctx, clientv3.WithSerializable())
	if err != nil {
		return nil, fmt.Errorf("etcd status: member list: %w", ep.explain(err))
	}
	if alarms, err := cli.AlarmList(lctx); err == nil {
		for _, a := range alarms.Alarms {
			out.Alarms = append(out.Alarms, fmt.Sprintf("%s on member %s", a.Alarm, memberID(a.MemberID)))
		}
	}
	out.Members = make([]MemberStatus, len(list.Members))
	var wg sync.WaitGroup
	for i, m := range list.Members {
		ms := &out.Members[i]
		*ms = MemberStatus{ID: memberID(m.ID), Name: m.Name, PeerURLs: m.PeerURLs, ClientURLs: m.ClientURLs, Learner: m.IsLearner}
		if len(m.ClientURLs) == 0 {
			ms.Error = "not started: it has no client URL yet"
			continue
		}
		mep := ep
		mep.URL = m.ClientURLs[0]
		if m.ID == st.Header.GetMemberId() {
			mep.URL = ep.URL // the member we reached: ask it where we reached it
		}
		ms.Endpoint = mep.URL
		wg.Add(1)
		go func() {
			defer wg.Done()
			memberHealth(ctx, mep, ms)
		}()
	}
	wg.Wait()
	out.Healthy = len(out.Alarms) == 0 && out.Unhealthy() == 0
	return out, nil
}

// memberHealth fills in one member's status and health.
func memberHealth(ctx context.Context, ep Endpoint, ms *MemberStatus) {
	cli, st, err := ep.connect(ctx)
	if err != nil {
		ms.Error = err.Error()
		return
	}
	defer cli.Close()
	ms.Version, ms.DBSize, ms.DBSizeInUse = st.Version, st.DbSize, st.DbSizeInUse
	ms.Revision, ms.RaftTerm, ms.RaftIndex = st.Header.GetRevision(), st.RaftTerm, st.RaftIndex
	ms.Leader = st.Leader == st.Header.GetMemberId()
	if len(st.Errors) > 0 {
		ms.Error = fmt.Sprint(st.Errors)
		return
	}
	hctx, cancel := context.WithTimeout(ctx, ep.DialTimeout)
	defer cancel()
	// etcdctl endpoint health: a linearizable read; permission denied
	// still proves the member serves with a quorum.
	if _, err := cli.Get(hctx, "health"); err != nil && !errors.Is(err, rpctypes.ErrPermissionDenied) {
		ms.Error = "linearizable read failed (no quorum?): " + ep.explain(err).Error()
		return
	}
	ms.Healthy = true
}
