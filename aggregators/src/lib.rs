//! Group, cluster and grid aggregators: fold node reports into rollups (filled in by the aggregators issue).
