cat > my_texts.jsonl <<'JSONL'
{"id": "faq-1", "text": "如何修改登录密码？在“账户设置”中点击“安全”，输入旧密码和新密码即可。", "metadata": {"lang": "zh"}}
{"id": "faq-2", "text": "How do I reset my password? Open Account settings, then Security.", "metadata": {"lang": "en"}}
{"id": "faq-3", "text": "订单发货后一般三到五天送达，偏远地区可能需要七天。", "metadata": {"lang": "zh"}}
{"id": "faq-4", "text": "Orders usually arrive three to five days after shipping.", "metadata": {"lang": "en"}}
JSONL
