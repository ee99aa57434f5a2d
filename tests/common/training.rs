//! What every test that trains sends and reads: a dataset sent inline, a StartTraining
//! request, the events of a watch (`TestServer::watch_to_end`).

use finetune::pb;
use finetune::pb::watch_job_response::Item;

/// `bytes` sent inline as the dataset file `file_name` (ValidateDataset, StartTraining).
pub fn inline(bytes: Vec<u8>, file_name: &str) -> Option<pb::DatasetSource> {
    Some(pb::DatasetSource {
        source: Some(pb::dataset_source::Source::Content(bytes)),
        file_name: file_name.into(),
    })
}

/// A dataset of `reference/datasets/`, by file name.
pub fn reference_dataset(name: &str) -> Vec<u8> {
    let path = super::repo_file("reference/datasets").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A StartTraining request. By default: the sample dataset inline as
/// `training-data.jsonl`, the base model `gpt-4o-mini-2024-07-18`, nothing else set; each
/// method changes one thing.
#[derive(Clone, Debug)]
pub struct StartTraining {
    request: pb::StartTrainingRequest,
    dataset: Option<Vec<u8>>,
    file_name: String,
}

impl StartTraining {
    pub fn new(request_id: &str) -> StartTraining {
        StartTraining {
            request: pb::StartTrainingRequest {
                request_id: request_id.into(),
                model: "gpt-4o-mini-2024-07-18".into(),
                ..Default::default()
            },
            dataset: None,
            file_name: "training-data.jsonl".into(),
        }
    }

    /// Trains on `bytes` instead of the sample dataset.
    pub fn dataset(mut self, bytes: Vec<u8>) -> StartTraining {
        self.dataset = Some(bytes);
        self
    }

    pub fn file_name(mut self, name: &str) -> StartTraining {
        self.file_name = name.into();
        self
    }

    /// The base model; `""` leaves it to the service's default.
    pub fn model(mut self, model: &str) -> StartTraining {
        self.request.model = model.into();
        self
    }

    pub fn suffix(mut self, suffix: &str) -> StartTraining {
        self.request.suffix = suffix.into();
        self
    }

    pub fn accepted(mut self, problems: Vec<pb::AcceptedProblem>) -> StartTraining {
        self.request.accepted_problems = problems;
        self
    }

    pub fn build(self) -> pb::StartTrainingRequest {
        let dataset = self.dataset.unwrap_or_else(super::sample_dataset);
        pb::StartTrainingRequest {
            training: inline(dataset, &self.file_name),
            ..self.request
        }
    }
}

/// The events among `items`, in order.
pub fn events(items: &[Item]) -> Vec<pb::JobEvent> {
    items
        .iter()
        .filter_map(|i| match i {
            Item::Event(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}
