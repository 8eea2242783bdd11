//! The console in a real browser (headless chromium through chromedriver), against the
//! running stack.

mod console_browser;
