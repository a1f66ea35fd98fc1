//! The SERMAS platform's topic catalogue (its `SermasTopics`, sermas-api at 010ee9e), as
//! named templates: `topics::dialogue::MESSAGES` instead of typing
//! `app/:appId/dialogue/messages/:sessionId`, and [`by_name`] for a name from elsewhere
//! (`"dialogue.messages"`, the platform's `resource.key` with the key in snake case).
//!
//! Modules the platform adds at run time (`PlatformTopicsService.addResource`) name their
//! own `app/:appId/{resource}/{scope}` templates; those are not here.

/// The templates, by resource.
pub mod topics {
    /// `ui`.
    pub mod ui {
        /// `ui.assetStatus`.
        pub const ASSET_STATUS: &str = "app/:appId/ui/status";
        /// `ui.interaction`.
        pub const INTERACTION: &str = "app/:appId/ui/interaction/:moduleId";
        /// `ui.content`.
        pub const CONTENT: &str = "app/:appId/ui/content";
    }
    /// `detection`.
    pub mod detection {
        /// `detection.userDetection`.
        pub const USER_DETECTION: &str = "app/:appId/detection/user";
        /// `detection.interactionIntention`.
        pub const INTERACTION_INTENTION: &str = "app/:appId/detection/interaction";
        /// `detection.userCharacterization`.
        pub const USER_CHARACTERIZATION: &str = "app/:appId/detection/characterization";
        /// `detection.audioClassification`.
        pub const AUDIO_CLASSIFICATION: &str = "app/:appId/detection/audio";
        /// `detection.objectDetection`.
        pub const OBJECT_DETECTION: &str = "app/:appId/detection/object";
        /// `detection.qrCode`.
        pub const QR_CODE: &str = "app/:appId/detection/qr_code";
        /// `detection.noise`.
        pub const NOISE: &str = "app/:appId/detection/noise";
    }
    /// `robotics`.
    pub mod robotics {
        /// `robotics.actuation`.
        pub const ACTUATION: &str = "app/:appId/robotics/actuate";
        /// `robotics.movement`.
        pub const MOVEMENT: &str = "app/:appId/robotics/move";
        /// `robotics.status`.
        pub const STATUS: &str = "app/:appId/robotics/status";
        /// `robotics.initialPose`.
        pub const INITIAL_POSE: &str = "app/:appId/robotics/initialpose";
        /// `robotics.opState`.
        pub const OP_STATE: &str = "app/:appId/robotics/opstate";
    }
    /// `session`.
    pub mod session {
        /// `session.userInteraction`.
        pub const USER_INTERACTION: &str = "app/:appId/session/interaction/user";
        /// `session.agentInteraction`.
        pub const AGENT_INTERACTION: &str = "app/:appId/session/interaction/agent";
        /// `session.agentHeartBeat`.
        pub const AGENT_HEART_BEAT: &str = "app/:appId/session/agent/heartbeat";
        /// `session.agentChanged`.
        pub const AGENT_CHANGED: &str = "app/:appId/session/agent/changed/:agentId";
        /// `session.support`.
        pub const SUPPORT: &str = "app/:appId/session/support";
        /// `session.storage`.
        pub const STORAGE: &str = "app/:appId/session/storage/:storageId";
        /// `session.sessionChanged`.
        pub const SESSION_CHANGED: &str = "app/:appId/session/session/changed/:sessionId";
    }
    /// `dialogue`.
    pub mod dialogue {
        /// `dialogue.languageManagement`.
        pub const LANGUAGE_MANAGEMENT: &str = "app/:appId/dialogue/language";
        /// `dialogue.messages`.
        pub const MESSAGES: &str = "app/:appId/dialogue/messages/:sessionId";
        /// `dialogue.stt`.
        pub const STT: &str = "app/:appId/dialogue/stt/:sessionId";
        /// `dialogue.userSpeech`.
        pub const USER_SPEECH: &str = "app/:appId/dialogue/user-speech/:sessionId/:chunkId";
        /// `dialogue.userSpeechStream`.
        pub const USER_SPEECH_STREAM: &str =
            "app/:appId/dialogue/user-speech/stream/:sessionId/:chunkId";
        /// `dialogue.agentSpeech`.
        pub const AGENT_SPEECH: &str = "app/:appId/dialogue/speech/:sessionId/:messageId/:chunkId";
        /// `dialogue.agentStopSpeech`.
        pub const AGENT_STOP_SPEECH: &str = "app/:appId/dialogue/stop/:sessionId";
        /// `dialogue.agentPauseSpeech`.
        pub const AGENT_PAUSE_SPEECH: &str = "app/:appId/dialogue/pause/:sessionId";
        /// `dialogue.agentContinueSpeech`.
        pub const AGENT_CONTINUE_SPEECH: &str = "app/:appId/dialogue/continue/:sessionId";
        /// `dialogue.dialogDocument`.
        pub const DIALOG_DOCUMENT: &str = "app/:appId/dialogue/document";
        /// `dialogue.toolTriggered`.
        pub const TOOL_TRIGGERED: &str = "app/:appId/dialogue/tool/:name";
        /// `dialogue.toolChanged`.
        pub const TOOL_CHANGED: &str = "app/:appId/dialogue/tool/changed/:repositoryId";
        /// `dialogue.toolNotMatching`.
        pub const TOOL_NOT_MATCHING: &str = "app/:appId/dialogue/tool/not-matching";
        /// `dialogue.taskTriggered`.
        pub const TASK_TRIGGERED: &str = "app/:appId/dialogue/task/:taskId";
        /// `dialogue.taskChanged`.
        pub const TASK_CHANGED: &str = "app/:appId/dialogue/task/changed/:taskId";
        /// `dialogue.taskProgress`.
        pub const TASK_PROGRESS: &str = "app/:appId/dialogue/task/progress/:taskId";
        /// `dialogue.taskRecordChanged`.
        pub const TASK_RECORD_CHANGED: &str = "app/:appId/dialogue/task/record/:taskId";
        /// `dialogue.taskFieldHandler`.
        pub const TASK_FIELD_HANDLER: &str = "app/:appId/dialogue/task/handler";
        /// `dialogue.request`.
        pub const REQUEST: &str = "app/:appId/dialogue/request/:sessionId";
        /// `dialogue.progress`.
        pub const PROGRESS: &str = "app/:appId/dialogue/progress/:sessionId";
    }
    /// `xr`.
    pub mod xr {
        /// `xr.occlusion`.
        pub const OCCLUSION: &str = "app/:appId/xr/occlusion";
        /// `xr.markerDetected`.
        pub const MARKER_DETECTED: &str = "app/:appId/xr/marker/detected";
        /// `xr.markerChanged`.
        pub const MARKER_CHANGED: &str = "app/:appId/xr/marker/changed/:markerId";
    }
    /// `auth`.
    pub mod auth {
        /// `auth.update`.
        pub const UPDATE: &str = "app/:appId/auth/update";
        /// `auth.create`.
        pub const CREATE: &str = "app/:appId/auth/create";
        /// `auth.login`.
        pub const LOGIN: &str = "app/:appId/auth/login";
        /// `auth.management`.
        pub const MANAGEMENT: &str = "app/:appId/auth/management";
    }
    /// `platform`.
    pub mod platform {
        /// `platform.appChanged`.
        pub const APP_CHANGED: &str = "app/:appId/platform/app/changed/:appId";
        /// `platform.clientChanged`.
        pub const CLIENT_CHANGED: &str = "app/:appId/platform/client/changed/:clientId";
        /// `platform.tokenRequested`.
        pub const TOKEN_REQUESTED: &str = "app/:appId/platform/token";
        /// `platform.appModuleChanged`.
        pub const APP_MODULE_CHANGED: &str = "app/:appId/platform/module";
        /// `platform.monitoringRecord`.
        pub const MONITORING_RECORD: &str = "app/:appId/platform/monitoring";
        /// `platform.moduleChanged`.
        pub const MODULE_CHANGED: &str = "system/platform/module/changed/:moduleId";
    }
    /// `monitoring`.
    pub mod monitoring {
        /// `monitoring.dataset`.
        pub const DATASET: &str = "app/:appId/monitoring/dataset";
    }
    /// `datacollection`.
    pub mod datacollection {
        /// `datacollection.datacollection`.
        pub const DATACOLLECTION: &str = "app/:appId/datacollection/interaction";
    }
}

/// Every template with its name, `resource.key` (the key in snake case).
pub const ALL: &[(&str, &str)] = &[
    ("ui.asset_status", topics::ui::ASSET_STATUS),
    ("ui.interaction", topics::ui::INTERACTION),
    ("ui.content", topics::ui::CONTENT),
    ("detection.user_detection", topics::detection::USER_DETECTION),
    ("detection.interaction_intention", topics::detection::INTERACTION_INTENTION),
    ("detection.user_characterization", topics::detection::USER_CHARACTERIZATION),
    ("detection.audio_classification", topics::detection::AUDIO_CLASSIFICATION),
    ("detection.object_detection", topics::detection::OBJECT_DETECTION),
    ("detection.qr_code", topics::detection::QR_CODE),
    ("detection.noise", topics::detection::NOISE),
    ("robotics.actuation", topics::robotics::ACTUATION),
    ("robotics.movement", topics::robotics::MOVEMENT),
    ("robotics.status", topics::robotics::STATUS),
    ("robotics.initial_pose", topics::robotics::INITIAL_POSE),
    ("robotics.op_state", topics::robotics::OP_STATE),
    ("session.user_interaction", topics::session::USER_INTERACTION),
    ("session.agent_interaction", topics::session::AGENT_INTERACTION),
    ("session.agent_heart_beat", topics::session::AGENT_HEART_BEAT),
    ("session.agent_changed", topics::session::AGENT_CHANGED),
    ("session.support", topics::session::SUPPORT),
    ("session.storage", topics::session::STORAGE),
    ("session.session_changed", topics::session::SESSION_CHANGED),
    ("dialogue.language_management", topics::dialogue::LANGUAGE_MANAGEMENT),
    ("dialogue.messages", topics::dialogue::MESSAGES),
    ("dialogue.stt", topics::dialogue::STT),
    ("dialogue.user_speech", topics::dialogue::USER_SPEECH),
    ("dialogue.user_speech_stream", topics::dialogue::USER_SPEECH_STREAM),
    ("dialogue.agent_speech", topics::dialogue::AGENT_SPEECH),
    ("dialogue.agent_stop_speech", topics::dialogue::AGENT_STOP_SPEECH),
    ("dialogue.agent_pause_speech", topics::dialogue::AGENT_PAUSE_SPEECH),
    ("dialogue.agent_continue_speech", topics::dialogue::AGENT_CONTINUE_SPEECH),
    ("dialogue.dialog_document", topics::dialogue::DIALOG_DOCUMENT),
    ("dialogue.tool_triggered", topics::dialogue::TOOL_TRIGGERED),
    ("dialogue.tool_changed", topics::dialogue::TOOL_CHANGED),
    ("dialogue.tool_not_matching", topics::dialogue::TOOL_NOT_MATCHING),
    ("dialogue.task_triggered", topics::dialogue::TASK_TRIGGERED),
    ("dialogue.task_changed", topics::dialogue::TASK_CHANGED),
    ("dialogue.task_progress", topics::dialogue::TASK_PROGRESS),
    ("dialogue.task_record_changed", topics::dialogue::TASK_RECORD_CHANGED),
    ("dialogue.task_field_handler", topics::dialogue::TASK_FIELD_HANDLER),
    ("dialogue.request", topics::dialogue::REQUEST),
    ("dialogue.progress", topics::dialogue::PROGRESS),
    ("xr.occlusion", topics::xr::OCCLUSION),
    ("xr.marker_detected", topics::xr::MARKER_DETECTED),
    ("xr.marker_changed", topics::xr::MARKER_CHANGED),
    ("auth.update", topics::auth::UPDATE),
    ("auth.create", topics::auth::CREATE),
    ("auth.login", topics::auth::LOGIN),
    ("auth.management", topics::auth::MANAGEMENT),
    ("platform.app_changed", topics::platform::APP_CHANGED),
    ("platform.client_changed", topics::platform::CLIENT_CHANGED),
    ("platform.token_requested", topics::platform::TOKEN_REQUESTED),
    ("platform.app_module_changed", topics::platform::APP_MODULE_CHANGED),
    ("platform.monitoring_record", topics::platform::MONITORING_RECORD),
    ("platform.module_changed", topics::platform::MODULE_CHANGED),
    ("monitoring.dataset", topics::monitoring::DATASET),
    ("datacollection.datacollection", topics::datacollection::DATACOLLECTION),
];

/// The template named `name` (`"dialogue.messages"`), if the catalogue has it.
pub fn by_name(name: &str) -> Option<&'static str> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::TopicTemplate;

    #[test]
    fn every_template_parses_and_every_name_is_unique() {
        let mut names: Vec<&str> = ALL.iter().map(|(n, _)| *n).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "a name twice");
        for (name, template) in ALL {
            let t = TopicTemplate::new(template).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(t.as_str(), *template);
        }
        assert_eq!(ALL.len(), 57, "the platform's 57 templates");
    }

    #[test]
    fn names_find_templates() {
        assert_eq!(by_name("dialogue.messages"), Some("app/:appId/dialogue/messages/:sessionId"));
        assert_eq!(topics::robotics::MOVEMENT, "app/:appId/robotics/move");
        assert_eq!(by_name("platform.module_changed"), Some(topics::platform::MODULE_CHANGED));
        assert_eq!(by_name("dialogue.nothing"), None);
    }
}
