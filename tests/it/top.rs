//! `gridmon top` under tmux (filled in with the view).
