//! Every problem code, with the line number and JSON path a user needs to fix it.

use finetune_core::dataset::{
    self, Catalog, Code, Format, Input, Options, Problem, Report, Role, Severity,
};

const SYSTEM: &str = r#"{"role":"system","content":"You are File Engine."}"#;
const USER: &str = r#"{"role":"user","content":"Build a pricing page"}"#;
const ASSISTANT: &str = r#"{"role":"assistant","content":"Here it is."}"#;

fn valid(n: usize) -> String {
    format!(r#"{{"messages":[{SYSTEM},{{"role":"user","content":"Question {n}"}},{ASSISTANT}]}}"#)
}

fn chat(messages: &str) -> String {
    format!(r#"{{"messages":[{messages}]}}"#)
}

fn run_with(
    training: &[u8],
    validation: Option<&[u8]>,
    options: &Options,
    catalog: &Catalog,
) -> Report {
    dataset::validate(
        Input::from_bytes("train.jsonl", training),
        validation.map(|v| Input::from_bytes("valid.jsonl", v)),
        options,
        catalog,
    )
    .expect("validation runs")
}

fn run(training: &str) -> Report {
    run_with(
        training.as_bytes(),
        None,
        &Options::default(),
        &Catalog::builtin(),
    )
}

fn problem(report: &Report, code: Code) -> &Problem {
    report
        .problems
        .iter()
        .find(|p| p.code == code)
        .unwrap_or_else(|| panic!("no {} in {:#?}", code.as_str(), report.problems))
}

/// Asserts a problem with `code` at `line` and `path`, with the code's severity.
fn expect(report: &Report, code: Code, line: u32, path: &str) -> Problem {
    let p = problem(report, code);
    assert_eq!((p.line, p.path.as_str()), (line, path), "{p:?}");
    assert_eq!(p.severity, code.severity());
    assert!(!p.message.is_empty());
    p.clone()
}

fn lines(ls: &[String]) -> String {
    ls.join("\n") + "\n"
}

#[test]
fn invalid_utf8_names_the_line_and_byte() {
    let mut bytes = format!("{}\n", valid(1)).into_bytes();
    bytes.extend_from_slice(b"{\"messages\": \"\xff\"}\n");
    let r = run_with(&bytes, None, &Options::default(), &Catalog::builtin());
    let p = expect(&r, Code::InvalidUtf8, 2, "");
    assert!(p.message.contains("byte 15"), "{}", p.message);
}

#[test]
fn byte_order_mark_is_reported_and_the_line_still_checked() {
    let r = run(&format!("\u{feff}{}\n", chat(USER)));
    expect(&r, Code::Utf8Bom, 1, "");
    expect(&r, Code::ExampleMissingAssistantMessage, 1, "messages");
    assert_eq!(r.counts_by_code.get("invalid_json"), None);
}

#[test]
fn blank_and_invalid_json_lines() {
    let r = run(&format!(
        "{}\n\n{{\"messages\": [}}\n{}\n",
        valid(1),
        valid(2)
    ));
    expect(&r, Code::BlankLine, 2, "");
    let p = expect(&r, Code::InvalidJson, 3, "");
    assert!(p.message.contains("column 15"), "{}", p.message);
    assert_eq!(r.training.examples, 2, "the good lines still count");
}

#[test]
fn parser_limits_and_duplicate_keys() {
    let deep = "[".repeat(200) + &"]".repeat(200);
    let many = format!("[{}0]", "0,".repeat(1_000_000));
    let twice = format!(
        r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"messages":[{SYSTEM},{USER},{ASSISTANT}]}}"#
    );
    let r = run(&lines(&[deep, many, twice]));
    let p = expect(&r, Code::NestingTooDeep, 1, "");
    assert!(p.message.contains("127 levels"), "{}", p.message);
    let p = expect(&r, Code::TooManyValues, 2, "");
    assert!(p.message.contains("1,000,000"), "{}", p.message);
    let p = expect(&r, Code::DuplicateKey, 3, "messages");
    assert!(p.message.contains("2 times"), "{}", p.message);
}

#[test]
fn data_type_for_lines_and_messages() {
    let r = run(&lines(&[
        "[1, 2]".into(),
        chat(&format!("{SYSTEM},5,{ASSISTANT}")),
    ]));
    let p = expect(&r, Code::DataType, 1, "");
    assert!(p.message.contains("a list"));
    let second = r
        .problems
        .iter()
        .find(|p| p.code == Code::DataType && p.line == 2)
        .unwrap();
    assert_eq!(second.path, "messages[1]");
}

#[test]
fn missing_messages_list() {
    let r = run(&lines(&[
        r#"{"messages": []}"#.into(),
        r#"{"conversation": []}"#.into(),
    ]));
    expect(&r, Code::MissingMessagesList, 1, "messages");
    assert!(
        r.problems
            .iter()
            .any(|p| p.code == Code::MissingMessagesList && p.line == 2)
    );
}

#[test]
fn message_keys_roles_and_content() {
    let r = run(&lines(&[
        chat(&format!(r#"{SYSTEM},{{"content":"no role"}},{ASSISTANT}"#)),
        chat(&format!(
            r#"{SYSTEM},{{"role":"user","content":"x","foo":1}},{ASSISTANT}"#
        )),
        chat(&format!(
            r#"{SYSTEM},{{"role":"bot","content":"x"}},{ASSISTANT}"#
        )),
        chat(&format!(
            r#"{SYSTEM},{{"role":"user","content":""}},{ASSISTANT}"#
        )),
        chat(&format!(r#"{SYSTEM},{{"role":"user"}},{ASSISTANT}"#)),
    ]));
    expect(&r, Code::MessageMissingKey, 1, "messages[1].role");
    expect(&r, Code::MessageUnrecognizedKey, 2, "messages[1].foo");
    let p = expect(&r, Code::UnrecognizedRole, 3, "messages[1].role");
    assert!(p.message.contains("\"bot\""));
    expect(&r, Code::MissingContent, 4, "messages[1].content");
    assert!(r.problems.iter().any(|p| p.code == Code::MessageMissingKey
        && p.line == 5
        && p.path == "messages[1].content"));
}

#[test]
fn content_parts() {
    let r = run(&chat(&format!(
        r#"{SYSTEM},{USER},{{"role":"assistant","content":[{{"type":"image_url","image_url":{{"url":"https://example.com/a.png"}}}}]}}"#
    )));
    let p = expect(
        &r,
        Code::InvalidContentPart,
        1,
        "messages[2].content[0].type",
    );
    assert!(p.message.contains("only allowed in user messages"));
    let ok = run(&chat(&format!(
        r#"{SYSTEM},{{"role":"user","content":[{{"type":"text","text":"What is this?"}},{{"type":"image_url","image_url":{{"url":"https://example.com/a.png","detail":"low"}}}}]}},{ASSISTANT}"#
    )));
    assert!(
        !ok.counts_by_code.contains_key("invalid_content_part"),
        "{:?}",
        ok.problems
    );
}

#[test]
fn example_missing_assistant_message() {
    let r = run(&chat(&format!("{SYSTEM},{USER}")));
    expect(&r, Code::ExampleMissingAssistantMessage, 1, "messages");
}

#[test]
fn weights() {
    let r = run(&lines(&[
        chat(&format!(
            r#"{SYSTEM},{USER},{{"role":"assistant","content":"a","weight":2}}"#
        )),
        chat(&format!(
            r#"{SYSTEM},{{"role":"user","content":"b","weight":1}},{ASSISTANT}"#
        )),
        chat(&format!(
            r#"{SYSTEM},{USER},{{"role":"assistant","content":"c","weight":"1"}}"#
        )),
    ]));
    expect(&r, Code::InvalidWeight, 1, "messages[2].weight");
    assert!(
        r.problems.iter().any(|p| p.code == Code::InvalidWeight
            && p.line == 2
            && p.path == "messages[1].weight")
    );
    assert!(
        r.problems
            .iter()
            .any(|p| p.code == Code::InvalidWeight && p.line == 3)
    );
}

#[test]
fn weight_zero_is_not_counted_as_trained_assistant_tokens() {
    let trained = run(&chat(&format!(
        r#"{SYSTEM},{USER},{{"role":"assistant","content":"one two three"}}"#
    )));
    let skipped = run(&chat(&format!(
        r#"{SYSTEM},{USER},{{"role":"assistant","content":"one two three","weight":0}}"#
    )));
    assert_eq!(skipped.counts_by_code.get("invalid_weight"), None);
    assert_eq!(trained.training.tokens.total, skipped.training.tokens.total);
    assert_eq!(trained.training.tokens.assistant_total, 3);
    assert_eq!(skipped.training.tokens.assistant_total, 0);
}

const TOOL_CALL: &str = r#"{"role":"assistant","tool_calls":[{"id":"call_1","type":"function","function":{"name":"create_file","arguments":"{\"path\":\"index.html\"}"}}]}"#;
const TOOLS: &str = r#""tools":[{"type":"function","function":{"name":"create_file","description":"Create a file","parameters":{"type":"object","properties":{"path":{"type":"string"}}}}}]"#;

#[test]
fn tool_calls_and_tool_messages_are_valid() {
    let line = format!(
        r#"{{"messages":[{SYSTEM},{USER},{TOOL_CALL},{{"role":"tool","tool_call_id":"call_1","content":"created"}},{ASSISTANT}],{TOOLS},"parallel_tool_calls":false}}"#
    );
    let r = run(&line);
    let errors: Vec<_> = r
        .problems
        .iter()
        .filter(|p| p.severity == Severity::Error && p.code != Code::TooFewExamples)
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert_eq!(r.format, Some(Format::Chat));
    // Tool calls and definitions count towards the example's tokens.
    let plain = run(&chat(&format!("{SYSTEM},{USER},{ASSISTANT}")));
    assert!(r.training.tokens.total > plain.training.tokens.total + 20);
}

#[test]
fn invalid_tool_calls_are_pinpointed() {
    let bad_args = TOOL_CALL.replace(r#""{\"path\":\"index.html\"}""#, r#""{not json""#);
    let object_args = TOOL_CALL.replace(r#""{\"path\":\"index.html\"}""#, r#"{"path":"x"}"#);
    let r = run(&lines(&[
        chat(&format!("{SYSTEM},{USER},{bad_args}")),
        chat(&format!("{SYSTEM},{USER},{object_args}")),
        chat(&format!(
            r#"{SYSTEM},{USER},{{"role":"tool","content":"done"}},{ASSISTANT}"#
        )),
    ]));
    expect(
        &r,
        Code::InvalidToolCall,
        1,
        "messages[2].tool_calls[0].function.arguments",
    );
    let p = r
        .problems
        .iter()
        .find(|p| p.code == Code::InvalidToolCall && p.line == 2)
        .unwrap();
    assert!(p.message.contains("JSON-encoded string"), "{}", p.message);
    assert!(r.problems.iter().any(|p| p.code == Code::MessageMissingKey
        && p.line == 3
        && p.path == "messages[2].tool_call_id"));
}

#[test]
fn tools_and_legacy_functions() {
    let r = run(&lines(&[
        format!(
            r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"tools":[{{"type":"function","function":{{"name":"bad name!"}}}}]}}"#
        ),
        format!(r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"parallel_tool_calls":"yes"}}"#),
        format!(r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"functions":[]}}"#),
        format!(
            r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"functions":[{{"name":"get_time"}}]}}"#
        ),
    ]));
    expect(&r, Code::InvalidTools, 1, "tools[0].function.name");
    assert!(
        r.problems.iter().any(|p| p.code == Code::InvalidTools
            && p.line == 2
            && p.path == "parallel_tool_calls")
    );
    expect(&r, Code::InvalidFunctions, 3, "functions");
    expect(&r, Code::DeprecatedFunctions, 3, "functions");
    assert!(
        !r.problems
            .iter()
            .any(|p| p.code == Code::InvalidFunctions && p.line == 4)
    );
}

const DPO: &str = r#"{"input":{"messages":[{"role":"system","content":"You are File Engine."},{"role":"user","content":"Fix my button"}]},"preferred_output":[{"role":"assistant","content":"Use onClick, not onclick."}],"non_preferred_output":[{"role":"assistant","content":"Try restarting."}]}"#;

#[test]
fn preference_examples_are_detected_and_counted() {
    let data: Vec<String> = (0..12)
        .map(|i| DPO.replace("Fix my button", &format!("Fix my button {i}")))
        .collect();
    let r = run(&lines(&data));
    assert_eq!(r.format, Some(Format::Preference));
    assert_eq!(r.error_count, 0, "{:#?}", r.problems);
    assert_eq!(r.training.examples, 12);
    assert!(r.training.tokens.assistant_total > 0);
    assert_eq!(r.training.tokens.messages_per_example.max, 4.0);
}

#[test]
fn preference_problems() {
    let missing = DPO.replace(
        r#","non_preferred_output":[{"role":"assistant","content":"Try restarting."}]"#,
        "",
    );
    let two = DPO.replace(
        r#""preferred_output":[{"role":"assistant","content":"Use onClick, not onclick."}]"#,
        r#""preferred_output":[{"role":"assistant","content":"a"},{"role":"assistant","content":"b"}]"#,
    );
    let legacy = DPO
        .replace("\"preferred_output\"", "\"preferred_completion\"")
        .replace("\"non_preferred_completion\"", "\"non_preferred_output\"");
    let r = run(&lines(&[missing, two, legacy]));
    expect(&r, Code::InvalidPreference, 1, "non_preferred_output");
    assert!(
        r.problems.iter().any(|p| p.code == Code::InvalidPreference
            && p.line == 2
            && p.path == "preferred_output")
    );
    expect(&r, Code::LegacyFieldName, 3, "preferred_completion");
}

// The audit against FineTuneChatRequestInput and FineTunePreferenceRequestInput (README,
// "Where validation is stricter or looser than OpenAI"): each case pinned.

#[test]
fn developer_messages_are_not_a_training_role() {
    let dev = r#"{"role":"developer","content":"You are File Engine."}"#;
    let r = run(&lines(&[
        chat(&format!("{dev},{USER},{ASSISTANT}")),
        DPO.replace(r#""role":"system""#, r#""role":"developer""#),
    ]));
    let p = expect(&r, Code::UnrecognizedRole, 1, "messages[0].role");
    assert!(p.message.contains("use system"), "{}", p.message);
    assert!(r.problems.iter().any(|p| p.code == Code::UnrecognizedRole
        && p.line == 2
        && p.path == "input.messages[0].role"));
}

#[test]
fn weight_is_the_integer_0_or_1_written_as_any_number() {
    let with = |w: &str| {
        run(&chat(&format!(
            r#"{SYSTEM},{USER},{{"role":"assistant","content":"one two three","weight":{w}}}"#
        )))
    };
    for w in ["1", "1.0", "0", "0.0"] {
        let r = with(w);
        assert_eq!(r.counts_by_code.get("invalid_weight"), None, "weight {w}");
        let trained = if w.starts_with('1') { 3 } else { 0 };
        assert_eq!(r.training.tokens.assistant_total, trained, "weight {w}");
    }
    for w in [r#""1""#, r#""0""#, "true", "0.5"] {
        expect(&with(w), Code::InvalidWeight, 1, "messages[2].weight");
    }
}

#[test]
fn preference_inputs_take_the_function_role_and_outputs_the_assistant_schema() {
    let function = DPO.replace(
        r#"{"role":"user","content":"Fix my button"}]"#,
        r#"{"role":"user","content":"Fix my button"},{"role":"function","name":"lint","content":"onclick"}]"#,
    );
    let named = DPO.replace(
        r#"[{"role":"assistant","content":"Use onClick"#,
        r#"[{"role":"assistant","name":"fe","content":"Use onClick"#,
    );
    let weighted = DPO.replace(
        r#"[{"role":"assistant","content":"Try restarting."}]"#,
        r#"[{"role":"assistant","content":"Try restarting.","weight":0}]"#,
    );
    let extra_input = DPO.replace(r#""input":{"#, r#""input":{"temperature":0.2,"#);
    let user_output = DPO.replace(
        r#"[{"role":"assistant","content":"Try restarting."}]"#,
        r#"[{"role":"user","content":"Try restarting."}]"#,
    );
    let r = run(&lines(&[
        function,
        named,
        weighted,
        extra_input,
        user_output,
    ]));
    let on = |line: u32| -> Vec<&str> {
        r.problems
            .iter()
            .filter(|p| p.line == line && p.severity == Severity::Error)
            .map(|p| p.code.as_str())
            .collect()
    };
    assert_eq!(on(1), Vec::<&str>::new(), "{:#?}", r.problems);
    expect(&r, Code::DeprecatedFunctions, 1, "input.messages[2].role");
    assert_eq!(on(2), Vec::<&str>::new(), "{:#?}", r.problems);
    let p = expect(&r, Code::InvalidWeight, 3, "non_preferred_output[0].weight");
    assert!(p.message.contains("preference output"), "{}", p.message);
    assert!(r.problems.iter().any(|p| p.code == Code::InvalidPreference
        && p.line == 4
        && p.path == "input.temperature"));
    assert!(r.problems.iter().any(|p| p.code == Code::InvalidPreference
        && p.line == 5
        && p.path == "non_preferred_output[0].role"));
}

fn image(url: &str) -> String {
    format!(r#"{{"type":"image_url","image_url":{{"url":"{url}"}}}}"#)
}

#[test]
fn image_urls_are_https_or_jpeg_png_webp_data_urls() {
    let with = |url: &str| {
        run(&chat(&format!(
            r#"{SYSTEM},{{"role":"user","content":[{}]}},{ASSISTANT}"#,
            image(url)
        )))
    };
    for ok in [
        "https://example.com/a.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "data:image/jpeg;base64,/9j/4AAQ",
        "data:image/webp;base64,UklGRg==",
    ] {
        assert_eq!(with(ok).error_count, 1, "{ok}: only too_few_examples");
    }
    let p = expect(
        &with("http://example.com/a.png"),
        Code::InvalidContentPart,
        1,
        "messages[1].content[0].image_url.url",
    );
    assert!(p.message.contains("https://"), "{}", p.message);
    expect(
        &with("data:image/gif;base64,R0lGODlh"),
        Code::InvalidContentPart,
        1,
        "messages[1].content[0].image_url.url",
    );
}

#[test]
fn an_example_holds_at_most_ten_images() {
    let user = |n: usize, from: usize| {
        let parts: Vec<String> = (from..from + n)
            .map(|i| image(&format!("https://example.com/{i}.png")))
            .collect();
        format!(r#"{{"role":"user","content":[{}]}}"#, parts.join(","))
    };
    let ten = run(&chat(&format!("{SYSTEM},{},{ASSISTANT}", user(10, 0))));
    assert_eq!(ten.counts_by_code.get("too_many_images"), None);
    // Counted over the whole example, not per message.
    let eleven = run(&chat(&format!(
        "{SYSTEM},{},{ASSISTANT},{},{ASSISTANT}",
        user(6, 0),
        user(5, 6)
    )));
    let p = expect(&eleven, Code::TooManyImages, 1, "messages");
    assert!(p.message.contains("11 images"), "{}", p.message);
    // DPO is text-only.
    let dpo = DPO.replace(r#"{"role":"user","content":"Fix my button"}"#, &user(1, 0));
    expect(&run(&dpo), Code::InvalidPreference, 1, "input.messages");
}

#[test]
fn tool_call_arguments_count_as_trained_assistant_tokens() {
    let plain = run(&chat(&format!("{SYSTEM},{USER},{ASSISTANT}")));
    let with_call = run(&chat(&format!(
        r#"{SYSTEM},{USER},{TOOL_CALL},{{"role":"tool","tool_call_id":"call_1","content":"created"}},{ASSISTANT}"#
    )));
    let skipped = run(&chat(&format!(
        r#"{SYSTEM},{USER},{},{{"role":"tool","tool_call_id":"call_1","content":"created"}},{ASSISTANT}"#,
        TOOL_CALL.replace(
            r#""role":"assistant","#,
            r#""role":"assistant","weight":0,"#
        )
    )));
    // name "create_file" and arguments {"path":"index.html"} are what the model learns to write.
    let call = with_call.training.tokens.assistant_total - plain.training.tokens.assistant_total;
    assert!(call >= 6, "tool call adds {call} assistant tokens");
    assert_eq!(
        skipped.training.tokens.assistant_total,
        plain.training.tokens.assistant_total
    );
}

#[test]
fn mixed_and_unsupported_formats() {
    let r = run(&lines(&[
        valid(1),
        DPO.into(),
        r#"{"prompt":"a","completion":"b"}"#.into(),
    ]));
    assert_eq!(r.format, Some(Format::Chat));
    let p = expect(&r, Code::MixedFormat, 2, "");
    assert!(p.message.contains("preference"));
    expect(&r, Code::UnsupportedFormat, 3, "");
}

#[test]
fn secrets_are_flagged_without_being_repeated() {
    let key = "sk-proj-Zx8Qw3Er5Ty7Ui9Op1As2Df4Gh6Jk8L";
    let r = run(&chat(&format!(
        r#"{SYSTEM},{{"role":"user","content":"my key is {key}"}},{ASSISTANT}"#
    )));
    let p = expect(&r, Code::PossibleSecret, 1, "messages[1].content");
    assert!(
        !p.message.contains(key) && !p.message.contains("Zx8Qw3"),
        "{}",
        p.message
    );
    let pem = run(&chat(&format!(
        r#"{SYSTEM},{USER},{{"role":"assistant","content":"-----BEGIN PRIVATE KEY-----\nMIIE"}}"#
    )));
    expect(&pem, Code::PossibleSecret, 1, "messages[2].content");
}

#[test]
fn dataset_size_checks() {
    let three: Vec<String> = (0..3).map(valid).collect();
    let r = run(&lines(&three));
    let p = expect(&r, Code::TooFewExamples, 0, "");
    assert!(p.message.contains("3 training examples"));
    assert!(r.has_errors());
    let ten: Vec<String> = (0..10).map(valid).collect();
    let r = run(&lines(&ten));
    expect(&r, Code::FewExamples, 0, "");
    assert!(!r.has_errors(), "{:#?}", r.problems);
    let sixty: Vec<String> = (0..60).map(valid).collect();
    assert!(run(&lines(&sixty)).problems.is_empty());
}

#[test]
fn empty_and_whitespace_files() {
    let r = run("");
    assert_eq!((r.training.lines, r.training.examples), (0, 0));
    expect(&r, Code::TooFewExamples, 0, "");
    let r = run("\n \n");
    assert_eq!(r.counts_by_code.get("blank_line"), Some(&2));
}

#[test]
fn metadata_and_top_level_keys() {
    let r = run(&lines(&[
        format!(r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"metadata":"fix_code"}}"#),
        format!(r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"foo":1}}"#),
    ]));
    expect(&r, Code::InvalidMetadata, 1, "metadata");
    expect(&r, Code::UnrecognizedKey, 2, "foo");
}

#[test]
fn missing_system_and_user_messages() {
    let r = run(&lines(&[
        chat(&format!("{USER},{ASSISTANT}")),
        chat(&format!("{SYSTEM},{ASSISTANT}")),
    ]));
    expect(&r, Code::MissingSystemMessage, 1, "messages");
    expect(&r, Code::MissingUserMessage, 2, "messages");
}

#[test]
fn duplicates_name_both_lines_and_ignore_key_order_and_metadata() {
    let reordered = format!(
        r#"{{"metadata":{{"intent":"x"}},"messages":[{SYSTEM},{{"content":"Question 1","role":"user"}},{ASSISTANT}]}}"#
    );
    let r = run(&lines(&[valid(1), valid(2), reordered]));
    let p = expect(&r, Code::DuplicateExample, 3, "");
    assert!(p.message.contains("line 1"), "{}", p.message);
}

#[test]
fn validation_overlap_points_at_the_training_line() {
    let training = lines(&[valid(1), valid(2), valid(3)]);
    let validation = lines(&[valid(7), valid(2)]);
    let r = run_with(
        training.as_bytes(),
        Some(validation.as_bytes()),
        &Options::default(),
        &Catalog::builtin(),
    );
    let p = expect(&r, Code::ValidationOverlap, 2, "");
    assert_eq!(p.dataset, Role::Validation);
    assert!(p.message.contains("training line 2"), "{}", p.message);
    let v = r.validation.as_ref().unwrap();
    assert_eq!(v.examples, 2);
    assert_eq!(
        r.billed_tokens,
        r.training.tokens.total * u64::from(r.epochs),
        "validation is not billed"
    );
}

#[test]
fn intents_are_counted_and_thin_ones_named() {
    let mut data: Vec<String> = (0..4)
        .map(|i| format!(r#"{{"messages":[{SYSTEM},{{"role":"user","content":"q{i}"}},{ASSISTANT}],"metadata":{{"intent":"generate_code"}}}}"#))
        .collect();
    data.push(format!(
        r#"{{"messages":[{SYSTEM},{USER},{ASSISTANT}],"metadata":{{"intent":"style_question"}}}}"#
    ));
    data.push(valid(99));
    let r = run(&lines(&data));
    let rows: Vec<(&str, u64, bool)> = r
        .intents
        .iter()
        .map(|i| (i.intent.as_str(), i.examples, i.below_minimum))
        .collect();
    assert_eq!(
        rows,
        vec![
            ("generate_code", 4, false),
            ("", 1, false),
            ("style_question", 1, true)
        ]
    );
    let p = expect(&r, Code::IntentBelowMinimum, 0, "");
    assert!(p.message.contains("style_question"));
}

#[test]
fn too_long_examples_and_unknown_models() {
    let catalog = Catalog::parse(
        r#"default_model = "tiny"
[[model]]
name = "tiny"
encoding = "o200k_base"
training_context = 40
training_usd_per_1m = 10.0
"#,
        "test catalog",
    )
    .unwrap();
    let data = lines(&[
        valid(1),
        chat(&format!(
            r#"{SYSTEM},{USER},{{"role":"assistant","content":"{}"}}"#,
            "word ".repeat(50)
        )),
    ]);
    let r = run_with(
        data.as_bytes(),
        None,
        &Options {
            epochs: Some(2),
            ..Options::default()
        },
        &catalog,
    );
    let p = expect(&r, Code::ExampleTooLong, 2, "");
    assert!(
        p.message.contains("training context of 40"),
        "{}",
        p.message
    );
    assert_eq!(r.training.tokens.examples_over_context, 1);
    // Billing caps each example at the context.
    let first = r.training.tokens.total - r.training.tokens.per_example.max as u64;
    assert_eq!(r.billed_tokens, (first.min(40) + 40) * 2);

    let r = run_with(
        data.as_bytes(),
        None,
        &Options {
            model: "llama-3-70b".into(),
            ..Options::default()
        },
        &catalog,
    );
    expect(&r, Code::UnknownModel, 0, "");
    assert_eq!(r.estimated_cost_usd, 0.0);
}

#[test]
fn every_problem_is_counted_but_the_list_is_capped() {
    let bad: Vec<String> = (0..25).map(|_| "not json".to_owned()).collect();
    let options = Options {
        max_problems: 5,
        ..Options::default()
    };
    let r = run_with(lines(&bad).as_bytes(), None, &options, &Catalog::builtin());
    assert_eq!(r.problems.len(), 5);
    assert!(r.problems_truncated);
    assert_eq!(r.counts_by_code.get("invalid_json"), Some(&25));
    assert_eq!(r.error_count, 26, "25 invalid lines and too_few_examples");
    assert_eq!(
        r.problems[0].code,
        Code::TooFewExamples,
        "dataset-wide findings come first"
    );
}

#[test]
fn crlf_line_endings_and_a_missing_final_newline_are_fine() {
    let ten: Vec<String> = (0..10).map(valid).collect();
    let data = ten.join("\r\n");
    let r = run(&data);
    assert_eq!((r.training.lines, r.training.examples), (10, 10));
    assert_eq!(r.error_count, 0, "{:#?}", r.problems);
}

#[test]
fn lines_are_numbered_across_batches_of_a_large_file() {
    // ~3 MiB so the reader splits it into several batches processed in parallel.
    let filler = "x".repeat(2000);
    let mut data: Vec<String> = (0..1500)
        .map(|i| {
            chat(&format!(
                r#"{SYSTEM},{{"role":"user","content":"{i} {filler}"}},{ASSISTANT}"#
            ))
        })
        .collect();
    data[1234] = "{broken".into();
    let r = run(&lines(&data));
    let p = expect(&r, Code::InvalidJson, 1235, "");
    assert!(p.message.contains("column"));
    assert_eq!(r.training.lines, 1500);
    assert_eq!(r.training.examples, 1499);
}

#[test]
fn every_code_is_exercised_by_this_file() {
    let source = include_str!("dataset_codes.rs");
    for code in Code::ALL {
        let variant = format!("{code:?}");
        assert!(
            source.contains(&format!("Code::{variant}")),
            "no test names Code::{variant}"
        );
    }
}

#[test]
fn the_readme_documents_every_code() {
    let readme = include_str!("../README.md");
    for code in Code::ALL {
        let row = format!(
            "| `{}` | {} |",
            code.as_str(),
            if code.severity() == Severity::Error {
                "error"
            } else {
                "warning"
            }
        );
        assert!(
            readme.contains(&row),
            "README has no row for {}",
            code.as_str()
        );
    }
}
