//! The alarm calls of etcd's `Maintenance` API (`raftkv alarm list` and
//! `disarm`), as etcd's client makes them: disarming lists the alarms and
//! lowers each; lowering one twice is harmless, so both calls may retry.

use crate::proto::etcdserverpb::alarm_request::AlarmAction;
use crate::proto::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::proto::etcdserverpb::{AlarmMember, AlarmRequest, AlarmType};

use super::{Client, ClientError};

impl Client {
    /// Every alarm raised in the cluster.
    pub async fn alarm_list(&mut self) -> Result<Vec<AlarmMember>, ClientError> {
        let req = AlarmRequest { action: AlarmAction::Get as i32, member_id: 0, alarm: AlarmType::None as i32 };
        self.alarm(req).await
    }

    /// Lowers every alarm raised; returns the ones lowered.
    pub async fn alarm_disarm(&mut self) -> Result<Vec<AlarmMember>, ClientError> {
        let mut lowered = Vec::new();
        for alarm in self.alarm_list().await? {
            let req =
                AlarmRequest { action: AlarmAction::Deactivate as i32, member_id: alarm.member_id, alarm: alarm.alarm };
            lowered.extend(self.alarm(req).await?);
        }
        Ok(lowered)
    }

    async fn alarm(&mut self, req: AlarmRequest) -> Result<Vec<AlarmMember>, ClientError> {
        self.idempotent(|ch| async move { Ok(MaintenanceClient::new(ch).alarm(req).await?.into_inner().alarms) }).await
    }
}
