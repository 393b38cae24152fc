//! `gridmon web`: the JSON API without a browser, and the pages in headless Chromium.
