//! The board in Debian's headless Chromium, driven through chromedriver: the whole life of a
//! TODO with JavaScript on and off, checking the page and the API after each step, and the board
//! with the API stopped. Screenshots go to `target/screenshots/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::helpers::{Service, api_find, spawn_api, spawn_web};

struct Driver {
    process: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn start_chromedriver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is installed (scripts/setup.sh installs chromium-driver)");
    let process = Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    // Owned from here on, so a failed wait still stops it.
    let driver = Driver { process, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return driver;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("chromedriver did not start");
}

async fn browser(driver: &Driver, javascript: bool) -> Client {
    let mut options = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--window-size=1280,1000"],
    });
    if !javascript {
        options["prefs"] = json!({ "profile.managed_default_content_settings.javascript": 2 });
    }
    let mut capabilities = serde_json::Map::new();
    capabilities.insert("goog:chromeOptions".into(), options);
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

fn screenshot_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(client: &Client, name: &str) {
    let png = client.screenshot().await.unwrap();
    std::fs::write(screenshot_dir().join(format!("{name}.png")), png).unwrap();
}

/// Waits until `css` matches (or, with `present: false`, matches nothing), up to 10 s.
async fn wait_for(client: &Client, css: &str, present: bool) {
    for _ in 0..200 {
        let found = !client.find_all(Locator::Css(css)).await.unwrap().is_empty();
        if found == present {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let page = client.source().await.unwrap_or_default();
    panic!(
        "waited for {css} to be {}: {page}",
        if present { "there" } else { "gone" }
    );
}

/// Clicks the element `css` selects. An element replaced between finding and clicking it (the
/// board re-rendering) is found again.
async fn click(client: &Client, css: &str) {
    let mut last_error = None;
    for _ in 0..20 {
        let clicked = match client.find(Locator::Css(css)).await {
            Ok(element) => element.click().await.map(|_| ()),
            Err(error) => Err(error),
        };
        match clicked {
            Ok(()) => return,
            Err(error) => last_error = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css}: {}", last_error.expect("tried at least once"));
}

/// The text of the element `css` selects, if it can be read now.
async fn text_of(client: &Client, css: &str) -> Option<String> {
    client.find(Locator::Css(css)).await.ok()?.text().await.ok()
}

async fn api_item(api: &Service, title: &str) -> Value {
    api_find(api, title)
        .await
        .unwrap_or_else(|| panic!("the API has no {title:?}"))
}

/// Create, move TODO -> PROGRESS -> DONE, edit, delete; page and API checked after each step.
async fn life_of_a_todo(
    client: &Client,
    web: &Service,
    api: &Service,
    name: &str,
    javascript: bool,
) {
    client.goto(&web.url("/")).await.unwrap();
    if javascript {
        // Survives only if no step reloads the page.
        client
            .execute("window.boardMarker = 42;", vec![])
            .await
            .unwrap();
    }
    let title = format!("Try the board ({name})");
    client
        .find(Locator::Css("#new-title"))
        .await
        .unwrap()
        .send_keys(&title)
        .await
        .unwrap();
    client
        .find(Locator::Css("#new-content"))
        .await
        .unwrap()
        .send_keys("in a real browser")
        .await
        .unwrap();
    click(client, ".new-form button[type=submit]").await;
    let item = loop {
        if let Some(item) = api_find(api, &title).await {
            break item;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let id = item["id"].as_i64().unwrap();
    let card = format!("#todo-{id}");
    wait_for(client, &format!("section[data-status=TODO] {card}"), true).await;
    assert_eq!(item["status"], "TODO");
    screenshot(client, &format!("{name}-created")).await;

    for status in ["PROGRESS", "DONE"] {
        click(
            client,
            &format!("{card} form.move input[value={status}] + button"),
        )
        .await;
        wait_for(
            client,
            &format!("section[data-status={status}] {card}"),
            true,
        )
        .await;
        assert_eq!(api_item(api, &title).await["status"], status);
    }

    click(client, &format!("{card} details.edit summary")).await;
    let input = client
        .find(Locator::Css(&format!("#title-{id}")))
        .await
        .unwrap();
    input.clear().await.unwrap();
    let edited = format!("{title} — edited");
    input.send_keys(&edited).await.unwrap();
    click(client, &format!("{card} details.edit button[type=submit]")).await;
    wait_for(client, &format!("{card} h3.title"), true).await;
    // The board may be re-rendering as we read (the element we found replaced before we read
    // its text): a read that fails is tried again, like a title not yet changed.
    let mut shown = None;
    for _ in 0..200 {
        shown = text_of(client, &format!("{card} h3.title")).await;
        if shown.as_deref() == Some(edited.as_str()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(shown.as_deref(), Some(edited.as_str()));
    assert_eq!(api_item(api, &edited).await["id"], id);

    click(client, &format!("{card} details.delete summary")).await;
    click(client, &format!("{card} details.delete button")).await;
    wait_for(client, &card, false).await;
    assert!(api_find(api, &edited).await.is_none());

    if javascript {
        let marker = client
            .execute("return window.boardMarker;", vec![])
            .await
            .unwrap();
        assert_eq!(marker, json!(42), "the page was never reloaded");
    }
}

#[tokio::test]
async fn the_board_in_a_real_browser_with_and_without_javascript_and_with_the_api_down() {
    let dir = tempfile::tempdir().unwrap();
    let mut api = spawn_api(dir.path(), true).await;
    let web = spawn_web(&api.url("")).await;
    let driver = start_chromedriver();

    let client = browser(&driver, true).await;
    life_of_a_todo(&client, &web, &api, "javascript", true).await;
    client.goto(&web.url("/")).await.unwrap();
    wait_for(&client, "section[data-status=PROGRESS] .card", true).await;
    screenshot(&client, "board").await;
    // Escaped output: a title with markup shows as text.
    client
        .find(Locator::Css("#new-title"))
        .await
        .unwrap()
        .send_keys("<b>bold?</b>")
        .await
        .unwrap();
    click(&client, ".new-form button[type=submit]").await;
    wait_for(
        &client,
        "section[data-status=TODO] .card:nth-child(2)",
        true,
    )
    .await;
    let titles = client
        .find_all(Locator::Css("section[data-status=TODO] h3.title"))
        .await
        .unwrap();
    let mut texts = Vec::new();
    for title in titles {
        texts.push(title.text().await.unwrap());
    }
    assert!(texts.contains(&"<b>bold?</b>".to_string()), "{texts:?}");
    // A validation error keeps the input.
    client
        .find(Locator::Css("#new-content"))
        .await
        .unwrap()
        .send_keys("no title")
        .await
        .unwrap();
    click(&client, ".new-form button[type=submit]").await;
    wait_for(&client, "#new-error", true).await;
    let kept = client
        .find(Locator::Css("#new-content"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("no title"));
    // Every visible input has a label, every control is a native focusable element, and focus
    // shows.
    let unlabelled = client
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), textarea')]
               .filter(e => !document.querySelector(`label[for='${e.id}']`)).length;",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(unlabelled, json!(0));
    let outline = client
        .execute(
            "const e = document.querySelector('#new-title'); e.focus();
             return getComputedStyle(e).outlineStyle;",
            vec![],
        )
        .await
        .unwrap();
    assert_ne!(outline, json!("none"), "focused inputs show an outline");
    client.set_window_size(390, 844).await.unwrap();
    // One column on a phone: the three columns stack at the same left edge.
    let lefts = client
        .execute(
            "return [...document.querySelectorAll('section.column')].map(c => c.getBoundingClientRect().left);",
            vec![],
        )
        .await
        .unwrap();
    let lefts = lefts.as_array().unwrap();
    assert!(
        lefts.len() == 3 && lefts.iter().all(|l| l == &lefts[0]),
        "{lefts:?}"
    );
    screenshot(&client, "board-phone").await;
    client.close().await.unwrap();

    let client = browser(&driver, false).await;
    life_of_a_todo(&client, &web, &api, "no-javascript", false).await;
    let enhanced = client.find(Locator::Css("html[data-enhanced]")).await;
    assert!(
        enhanced.is_err(),
        "the script did not run, yet everything worked"
    );
    client.close().await.unwrap();

    api.stop().await;
    let client = browser(&driver, true).await;
    client.goto(&web.url("/")).await.unwrap();
    let notice = client
        .find(Locator::Css(".notice"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The board was seen before the API went down: its last good copy is shown, with its age.
    assert!(
        notice.starts_with("TODO API unavailable — showing the board as it was"),
        "{notice}"
    );
    assert!(
        client
            .find(Locator::Css("section.column.stale"))
            .await
            .is_ok()
    );
    screenshot(&client, "api-down").await;
    client.close().await.unwrap();
}
