curl -s -X POST "$EMBEDQ_API_URL/v1/collections/mytexts/search" \
  -H "Authorization: Bearer $EMBEDQ_KEY" -H 'Content-Type: application/json' \
  -d '{"query": "忘记密码怎么办", "k": 3}'
